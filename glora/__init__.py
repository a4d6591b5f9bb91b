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
    glora.jobs      thin Hydra entry points, one per console script
"""
__version__ = "0.2.0"
