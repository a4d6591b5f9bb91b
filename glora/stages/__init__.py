"""The engine's stages as plain functions of a config dataclass and a run dir, each
returning its result: pretrain → train (supernet) → search → retrain (+ merge, export),
and the pipeline that chains them. The Hydra jobs (``glora.jobs``) are thin doors to these."""
