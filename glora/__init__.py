"""glora-search: GLoRA supernet training, layout search and exact re-parameterisation
for timm vision transformers.

The library is importable without Hydra. The core (the user-facing folders) imports
nothing from the app above it; data flows one way:

    glora.run       plumbing floor: errors, atomic writes, checkpoints, distributed, plots
    glora.spaces    what may be chosen (Space, Layout: pure data)            } core
    glora.supernet  the GLoRA maths and model surgery, its settings, the     }
                    training loop's step hook for a supernet                 }
    glora.search    layout operators, strategies and the evaluator           }
    glora.data      the task's images (embedded suite, VTAB-1k folders, ImageFolder trees)
    glora.backbones  the frozen pretrained model (the one door to ``timm.create_model``)
    glora.training  the one training loop (parameter groups + a step hook: any model)
                    and the one inference loop
    glora.stages    pretrain, train, search, retrain (+ merge, export), pipeline: plain functions
    glora.api       the stages as plain functions over your own model and DataLoaders
    glora.jobs      thin Hydra entry points, one per console script

``glora.train_supernet``, ``glora.search_layout``, ``glora.retrain`` and ``glora.merge`` are
:mod:`glora.api`'s, imported on first use (``import glora`` stays light and the layers
below never import the API above them).
"""
import importlib

__version__ = "0.2.0"

_API = ("train_supernet", "search_layout", "retrain", "merge", "SearchResult", "LoaderError")


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("glora.api"), name)
    raise AttributeError(f"module 'glora' has no attribute {name!r}")
