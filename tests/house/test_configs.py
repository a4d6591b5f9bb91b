"""Every config group composes into its dataclass; the smoke experiment applies to every job."""
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from glora.jobs.app import CONF_DIR
from glora.search import STRATEGIES
from glora.spaces import Space
from glora.stages.pretrain import PretrainJobConfig
from glora.stages.train import TrainJobConfig as TrainConfig


def _compose(name, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose(name, overrides=list(overrides)))


@pytest.mark.parametrize("overrides", [
    [], ["experiment=smoke"], ["space=mid"], ["space=small", "space.options.A=[lora,none]"],
    ["data=vtab1k", "data.root=/x"], ["data=imagefolder", "data.root=/x"], ["model=timm", "model.checkpoint=/w.safetensors"],
])
def test_train_config_groups(overrides):
    cfg = _compose("train", *overrides)
    assert isinstance(cfg, TrainConfig)
    assert isinstance(cfg.space.build(), Space)


def test_space_groups_match_presets():
    for preset in ("mid", "small"):
        assert _compose("train", f"space={preset}").space.build() == Space.preset(preset)
    # the default group: the paper's large supernet plus ranks 2 and 1 (LoRA_1 / LoRA_2 layouts for small budgets)
    assert _compose("train").space.build() == Space(ranks=(8, 4, 2, 1))
    assert _compose("train", "space.ranks=[8,4]").space.build() == Space.preset("large")
    restricted = _compose("train", "space.options.A=[lora,none]", "space.ranks=[16]").space.build()
    assert restricted.ranks == (16,) and restricted.options["A"] == ("lora", "none")


def test_smoke_experiment_shrinks_every_job_and_caches_apart():
    """experiment=smoke is the same code path on a tiny model and a few steps: it must
    change the recipe (so its backbone is cached apart) and nothing else of the task."""
    from glora.backbones.embedded import embedded_cache_dir

    full, smoke = _compose("pretrain"), _compose("pretrain", "experiment=smoke")
    assert isinstance(smoke, PretrainJobConfig)
    assert smoke.pretrain.kwargs["embed_dim"] < full.pretrain.kwargs["embed_dim"] and smoke.pretrain.steps < full.pretrain.steps
    assert embedded_cache_dir(smoke.pretrain, "c") != embedded_cache_dir(full.pretrain, "c")
    train, train_smoke = _compose("train"), _compose("train", "experiment=smoke")
    assert train_smoke.trainer.epochs < train.trainer.epochs and train_smoke.pretrain == smoke.pretrain
    assert train_smoke.data == train.data and train_smoke.space == train.space and train_smoke.optim == train.optim



EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("job", ["pretrain", "train", "search", "retrain", "pipeline", "evaluate"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_for_every_job(job, experiment):
    """One ``experiment=<name>`` serves every job: what only some jobs have (a backbone, an
    optimiser, a search size) must not break the others (glora-search experiment=real_cpu once
    failed with "Could not override 'model'")."""
    assert _compose(job, f"experiment={experiment}").task_name == job


@pytest.mark.slow
@pytest.mark.parametrize("experiment, img_size", [("real_cpu", 56), ("real_gpu", 224)])
def test_real_experiments_set_the_backbone_steps_and_search(experiment, img_size):
    """The real experiments reach each job: DINOv2 at their size with the relative A / D steps
    in the jobs that train, their search size in glora-search and the pipeline."""
    dinov2 = _compose("train", "model=dinov2_vits14").model
    for job in ("train", "retrain", "pipeline"):
        cfg = _compose(job, f"experiment={experiment}")
        assert cfg.model == replace(dinov2, img_size=img_size)
        assert (cfg.optim.relative_step.A, cfg.optim.relative_step.D) == (0.75, 0.3)
    search, pipeline = _compose("search", f"experiment={experiment}"), _compose("pipeline", f"experiment={experiment}")
    if experiment == "real_cpu":
        assert (search.search.population, search.search.generations) == (12, 4) == (pipeline.search.population, pipeline.search.generations)
        assert search.trainer.epochs == 5
    else:
        assert search.search == _compose("search").search

def test_a_setting_the_strategy_lacks_fails_at_compose():
    """search=random has no top_k: Hydra refuses it at start instead of ignoring it."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="top_k"):
        _compose("search", "search=random", "search.top_k=3")
    with pytest.raises(ConfigCompositionException, match="strategy"):
        _compose("search", "search.strategy=random")
    assert _compose("search", "search=evolution", "search.top_k=3").search.top_k == 3


def test_dataclass_defaults_equal_the_yaml():
    """The dataclasses (Python API) and conf/ (CLI) describe the same default run."""
    cfg = _compose("train")
    assert cfg.pretrain == TrainConfig().pretrain and cfg.trainer == TrainConfig().trainer
    assert cfg.optim == TrainConfig().optim and cfg.data == TrainConfig().data and cfg.model == TrainConfig().model
    from glora.search import STRATEGIES

    for name, cls in STRATEGIES.items():
        assert _compose("search", f"search={name}").search == cls()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_search_config_groups(strategy):
    from glora.search import STRATEGIES, strategy_name
    from glora.stages.search import SearchJobConfig

    cfg = _compose("search", f"search={strategy}")
    assert isinstance(cfg, SearchJobConfig) and type(cfg.search) is STRATEGIES[strategy] and cfg.search.population == 50
    smoke = _compose("search", f"search={strategy}", "experiment=smoke")
    assert smoke.search.population < 50 and strategy_name(smoke.search) == strategy


def test_retrain_and_pipeline_configs():
    from glora.stages.pipeline import PipelineJobConfig
    from glora.stages.retrain import RetrainJobConfig

    retrain = _compose("retrain", "layout=x.json", "retrain.protocol=val")
    assert isinstance(retrain, RetrainJobConfig) and retrain.retrain.protocol == "val"
    pipeline = _compose("pipeline")
    assert isinstance(pipeline, PipelineJobConfig) and pipeline.pipeline.tasks is None and pipeline.data.task == "count"
    assert pipeline.search.population == 20 and pipeline.search.generations == 8  # the pipeline's own, smaller search
    smoke = _compose("pipeline", "experiment=smoke")
    assert smoke.search.generations == 3 and smoke.trainer.epochs == 2 and smoke.pretrain.steps < 100


@pytest.mark.parametrize("launcher, target", [("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_sweep_launchers_compose(launcher, target):
    """The launchers a sweep can name: joblib (installed with the package) and the shipped
    SLURM config on top of hydra-submitit-launcher."""
    pytest.importorskip(f"hydra_plugins.hydra_{'submitit' if launcher == 'slurm' else 'joblib'}_launcher")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("search", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1
