"""Thin Hydra entry points, one per console script; each ``main`` hands its composed
config to a stage function of ``glora.stages``. No job imports another."""
