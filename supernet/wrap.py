"""Model-level GLoRA: swap targeted ``nn.Linear`` (and 1×1 ``nn.Conv2d``) layers in place, fix a
layout, merge.

Mirrors PEFT's tuner model: ``wrap`` injects layers, ``set_layout`` chooses their forms,
``merge`` writes W and b back into the original modules and unloads the wrappers.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from glora.spaces import Layout, LayoutError, Space, model_name

from .layer import SUPPORT_TENSOR, VECTOR_B, ChoiceSampler, GLoRALinear

__all__ = ["freeze_norm_stats", "glora_layers", "is_wrapped", "vector_b_of", "param_groups", "RELATIVE_TENSORS", "merge", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "wrap"]


def glora_layers(model: nn.Module) -> dict[str, GLoRALinear]:
    """Every GLoRA layer of ``model`` by its module name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GLoRALinear)}


def is_wrapped(model: nn.Module) -> bool:
    return getattr(model, "_glora_space", None) is not None


def space_of(model: nn.Module) -> Space:
    space = getattr(model, "_glora_space", None)
    if space is None:
        raise LayoutError(f"{model_name(model)} is not wrapped with GLoRA: call supernet.wrap(model, space) first")
    return space


def vector_b_of(model: nn.Module) -> str:
    """The ``vector_b`` a wrapped model was built with, read off its layers' row scale (the
    forms agree where every layer has one input, so either name is then right)."""
    space_of(model)
    layers = list(glora_layers(model).values())
    for name, scale in VECTOR_B.items():
        if all(layer.row_scale == scale(layer.in_features) for layer in layers):
            return name
    raise ValueError(f"{model_name(model)}'s GLoRA layers mix vector_b forms; wrap it once with supernet.wrap")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def wrap(
    model: nn.Module, space: Space, seed: int = 0, modules_to_train: tuple[str, ...] = (), up_init: str = "kaiming",
    vector_b: str = "mean",
) -> nn.Module:
    """Put GLoRA on ``space``'s target layers of ``model``, in place, in supernet mode.

    Every other parameter is frozen, except those under ``modules_to_train`` (module
    name prefixes, e.g. ``("head",)``); so are batch-norm statistics (``freeze_norm_stats``).
    ``seed`` seeds the generator that supernet mode draws each layer's per-forward choice
    from; ``up_init`` and ``vector_b`` are :class:`GLoRAConfig`'s.
    """
    if getattr(model, "_glora_space", None) is not None:
        raise ValueError(f"{model_name(model)} is already wrapped with GLoRA")
    sampler = ChoiceSampler(seed)
    for name, shape in space.target_layers(model).items():
        _set_submodule(model, name, GLoRALinear(model.get_submodule(name), space.choices(shape), space.max_rank, sampler, up_init, vector_b))
    support = {id(p) for layer in glora_layers(model).values() for p in layer.support_parameters()}
    prefixes = tuple(p.rstrip(".") + "." for p in modules_to_train)
    for name, param in model.named_parameters():
        param.requires_grad_(id(param) in support or name.startswith(prefixes))
    freeze_norm_stats(model, prefixes)
    model._glora_space = space
    model._glora_sampler = sampler
    return model


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_norm_stats(model: nn.Module, keep: tuple[str, ...] = ()) -> list[str]:
    """Batch norms outside ``keep`` (name prefixes) stay in eval mode whatever
    ``model.train()`` says: they normalise with the pretrained running statistics and never
    update them. Frozen means frozen: otherwise a CNN's statistics would drift in training,
    the adapter file (support tensors + head) would no longer rebuild the model, and the
    merged model would differ from the backbone in more than its targeted layers. ``merge``
    undoes it. Returns the frozen modules' names."""
    frozen = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not f"{name}.".startswith(keep):
            module.train = _stay_in_eval.__get__(module)  # an instance attribute: nn.Module.train reaches it per child
            module.eval()
            frozen.append(name)
    return frozen


def _unfreeze_norm_stats(model: nn.Module) -> None:
    for module in model.modules():
        if "train" in module.__dict__:
            del module.__dict__["train"]


RELATIVE_TENSORS = {"A": "weight", "D": "bias"}  # the multiplicative paths: W0 ⊙ A, b0 ⊙ D


def step_conflicts(fixed_lr: Mapping[str, float | None] | None, relative_step: Mapping[str, float | None] | None) -> list[str]:
    """The support tensors given both a fixed lr and a relative step (each takes one rule):
    the one check behind ``param_groups`` and the config's ``SupportSteps``."""
    return sorted(k for k, v in (relative_step or {}).items() if v is not None and (fixed_lr or {}).get(k) is not None)


def param_groups(
    model: nn.Module, lr: float, lr_mult: Mapping[str, float], fixed_lr: Mapping[str, float | None] | None = None,
    relative_step: Mapping[str, float | None] | None = None,
) -> list[dict]:
    """The trainable parameters as optimizer groups: each support tensor's (A–E) at
    ``fixed_lr[tensor]`` where that is set (an lr of its own, whatever ``lr``); A and D at
    ``lr × relative_step[tensor] / mean|W0|`` (``mean|b0|`` for D) of their own layer where
    that is set, so that W0 ⊙ A and b0 ⊙ D move W and b by ~``relative_step × lr`` a step
    whatever the backbone's weight scale (one group per layer); else at
    ``lr × lr_mult[tensor]``; everything else (the head, plain models) at ``lr``."""
    fixed = {k: v for k, v in (fixed_lr or {}).items() if v is not None}
    relative = {k: v for k, v in (relative_step or {}).items() if v is not None}
    both = step_conflicts(fixed, relative)
    if both:
        raise ValueError(f"support tensor(s) {both} have both a fixed lr and a relative step; set one of the two")
    unknown = sorted(set(relative) - set(RELATIVE_TENSORS))
    if unknown:
        raise ValueError(f"a relative step exists for {sorted(RELATIVE_TENSORS)} (the multiplicative paths), not {unknown}")
    rate = {key: fixed.get(key, lr * lr_mult.get(key, 1.0)) for key in {*lr_mult, *fixed}}
    groups: dict[str, list[nn.Parameter]] = {}
    owner: dict[int, str] = {}  # param id -> its group's name ("": the plain lr)
    for layer_name, layer in glora_layers(model).items():
        for n, p in layer.named_parameters():
            key = SUPPORT_TENSOR.get(n.rsplit(".", 1)[-1])
            if key is None:
                continue
            if key in relative:
                scale = getattr(layer, RELATIVE_TENSORS[key]).detach().abs().mean().item()  # a D exists only beside a bias
                name = f"{key}:{layer_name}"
                rate[name] = lr * relative[key] / scale if scale > 0 else lr * relative[key]  # an all-zero b0: D has no effect
                owner[id(p)] = name
            else:
                owner[id(p)] = key if key in fixed or lr_mult.get(key, 1.0) != 1.0 else ""
    for param in model.parameters():
        if param.requires_grad:
            groups.setdefault(owner.get(id(param), ""), []).append(param)
    return [{"params": params, "lr": rate.get(key, lr), "name": key or "rest"} for key, params in groups.items()]


def reseed(model: nn.Module, seed: int) -> None:
    """Reset the supernet's choice generator (e.g. from run seed and step under DDP)."""
    space_of(model)
    model._glora_sampler.seed(seed)


def support_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for layer in glora_layers(model).values() for p in layer.support_parameters()]


def set_layout(model: nn.Module, layout: Layout | None) -> Layout | None:
    """Fix every layer's choice to ``layout`` (checked against the model first), or
    return to supernet mode with ``None``. Returns the layout bound to this model."""
    space = space_of(model)
    layers = glora_layers(model)
    if layout is None:
        for layer in layers.values():
            layer.choice = None
        return None
    shapes = space.target_layers(model)
    bound = layout.check(shapes, space, model_name(model))
    for name, layer in layers.items():
        layer.choice = bound.layers[name]
    return bound


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Re-parameterise every GLoRA layer into its original ``nn.Linear`` / 1×1 conv and unload the
    wrappers, in place: the result has the module classes timm built and zero extra
    inference cost. Needs a fixed layout (``set_layout``)."""
    layers = glora_layers(model)
    for layer in layers.values():
        layer._fixed("merge")  # fail before touching any layer
    for name, layer in layers.items():
        weight, bias = layer.merged_weight_and_bias()
        if not torch.isfinite(weight).all() or (bias is not None and not torch.isfinite(bias).all()):
            raise ValueError(f"merge: layer {name!r} has non-finite merged weights; the support tensors diverged")
        base = layer.base_layer
        base.weight.copy_(weight.view_as(base.weight))
        if bias is not None:
            base.bias.copy_(bias)
        _set_submodule(model, name, base)
    _unfreeze_norm_stats(model)
    for attr in ("_glora_space", "_glora_sampler"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextlib.contextmanager
def merged_inference(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every layer runs its fixed choice as one plain matmul with W and b built
    once (what ``merge`` would give, without unloading); search evaluates candidates this
    way. The weights must not change inside; grad is off."""
    layers = list(glora_layers(model).values())
    with torch.no_grad():
        merged = [layer.merged_weight_and_bias() for layer in layers]  # raises before any change
        try:
            for layer, weight_and_bias in zip(layers, merged):
                layer.merged = weight_and_bias
            yield model
        finally:
            for layer in layers:
                layer.merged = None
