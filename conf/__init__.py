"""The Hydra configs of the jobs, shipped as package data (``glora.conf``)."""
