"""glora-search: GLoRA supernet training, layout search and exact re-parameterisation
for timm vision transformers.

The library is importable without Hydra; data flows one way:

    glora.spaces    what may be chosen (Space, Layout: pure data)
    glora.data      the task's images (embedded suite, VTAB-1k folders, ImageFolder trees)
    glora.backbone  the frozen pretrained model (the one door to ``timm.create_model``)
    glora.supernet  the GLoRA maths and model surgery (layer, wrap / set_layout / merge)
    glora.training  the one training loop and the one inference loop
    glora.search    layout operators, strategies and the evaluator
    glora.stages    pretrain, train, search, retrain (+ merge, export), pipeline: plain functions
    glora.jobs      thin Hydra entry points, one per console script
    glora.run       plumbing: errors, atomic writes, checkpoints, distributed, plots
"""
__version__ = "0.2.0"
