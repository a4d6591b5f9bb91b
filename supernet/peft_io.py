"""A searched per-layer layout as a PEFT GLoRA adapter, and a PEFT GLoRA adapter as a layout.

PEFT's GLoRA tuner (``peft_type`` GLORA) gives every targeted layer one configuration:
``config_A_B`` (lora / vector / constant / none, for A and B together), ``config_C`` (lora /
vector / none), ``config_D_E`` (vector / constant / none) and one rank ``r``. A searched
layout varies per layer and per tensor, but each PEFT form contains the smaller ones
exactly, so :func:`to_peft` writes the layout into the one configuration that holds every
form it uses, with each layer's tensors laid into PEFT's:

=====================  ===================================================================
PEFT form (ours)       PEFT tensors
=====================  ===================================================================
lora (``LoRA_r'``)     ``Xd[:, :r'] = down``, ``Xu[:r'] = up``, the other r - r' zero
lora (vector ``v``)    ``Xd[:, 0] = v``, ``Xu[0] = 1``: ``Xd Xu = v 1ᵀ`` (C: ``Xu[0, 0] = 1``)
lora (constant ``c``)  ``Xd[:, 0] = c``, ``Xu[0] = 1``
vector (constant)      ``X = c`` everywhere
any (``none``)         zeros
=====================  ===================================================================

Vector and constant B are stored times the layer's ``row_scale`` (ours act on the inputs'
mean under ``vector_b=mean``, PEFT's on their sum), so the effective W and b are the same
numbers. PEFT's layer wraps ``nn.Linear`` only: a layout on 1×1 convolutions is refused.
The files are written by PEFT itself (``save_pretrained``) and read by it
(``PeftModel.from_pretrained``), so key names and shapes are PEFT's own. peft is imported
here only, when one of these functions is called.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from glora.run.errors import CheckpointError
from glora.run.io import atomic_write
from glora.spaces import DEFAULT_TARGETS, TENSORS, Layout, LayoutError, Option, Space, SpaceError, model_name

from .layer import GLoRALinear
from .wrap import _set_submodule, glora_layers, is_wrapped, set_layout, space_of, support_parameters, wrap

__all__ = ["PEFT_FILES", "PeftExportError", "check_peft_exportable", "from_peft", "peft_available", "peft_forms", "to_peft"]

#: What ``save_pretrained`` writes and ``from_peft`` reads.
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")

#: Each PEFT config field's forms, smallest first: a form holds every one before it.
_ORDER = {"config_A_B": ("none", "constant", "vector", "lora"), "config_C": ("none", "vector", "lora"),
          "config_D_E": ("none", "constant", "vector")}
_FIELD = {"A": "config_A_B", "B": "config_A_B", "C": "config_C", "D": "config_D_E", "E": "config_D_E"}


class PeftExportError(LayoutError):
    """A layout that PEFT's GLoRA layer cannot compute exactly."""


def check_peft_exportable(model: nn.Module) -> None:
    """Refuse, naming the layer, a wrapped ``model`` that PEFT's GLoRA cannot hold: its layer
    wraps ``nn.Linear`` only (a job checks this before it trains)."""
    conv = next((n for n, layer in glora_layers(model).items() if layer.pointwise), None)
    if conv is not None:
        raise PeftExportError(f"export.peft: layer {conv!r} is a 1x1 Conv2d; PEFT's GLoRA wraps nn.Linear only, so this layout "
                              "has no PEFT form: use the merged model (model.safetensors) or adapter.safetensors instead")


def peft_available() -> None:
    """Raise the install hint now if peft (with its GLoRA tuner) is missing: a job asked to
    export a PEFT adapter checks this before it trains."""
    _peft()


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError("PEFT export and import need peft: pip install 'glora-search[peft]' (or pip install 'peft>=0.21')") from None
    if not hasattr(peft, "GloraConfig"):
        raise ImportError(f"peft {peft.__version__} has no GLoRA tuner; pip install 'peft>=0.21'")
    return peft


def peft_forms(layout: Layout) -> dict[str, object]:
    """The one PEFT GLoRA configuration that holds every form ``layout`` uses:
    ``config_A_B``, ``config_C``, ``config_D_E`` and ``r`` (the largest LoRA rank, 1 if none)."""
    forms = {name: "none" for name in _ORDER}
    ranks = [1]
    for choice in layout.layers.values():
        for tensor, option in zip(TENSORS, choice):
            name = _FIELD[tensor]
            if _ORDER[name].index(option.kind) > _ORDER[name].index(forms[name]):
                forms[name] = option.kind
            if option.kind == "lora":
                ranks.append(option.rank)
    return {**forms, "r": max(ranks)}


def _plain_twin(model: nn.Module) -> nn.Module:
    """A copy of a wrapped ``model`` with every GLoRA layer back to its frozen base layer."""
    twin = copy.deepcopy(model)
    for name, layer in glora_layers(twin).items():
        _set_submodule(twin, name, layer.base_layer)
    for attr in ("_glora_space", "_glora_sampler"):
        if hasattr(twin, attr):
            delattr(twin, attr)
    return twin


def _trained_modules(model: nn.Module) -> list[str]:
    """Module names of the trainable parameters outside the GLoRA layers (the head), PEFT's ``modules_to_save``."""
    support = {id(p) for p in support_parameters(model)}
    names = {name.rpartition(".")[0] for name, p in model.named_parameters() if p.requires_grad and id(p) not in support}
    return sorted(n for n in names if n and not any(n.startswith(f"{m}.") for m in names if m != n))


# ---- ours -> PEFT ---------------------------------------------------------------------
def _ours(layer: GLoRALinear, tensor: str, option: Option) -> dict[str, Tensor]:
    """One support tensor of ``layer`` under ``option``: ``down``/``up`` (LoRA) or ``value``
    (vector: a column / an out-vector; constant: 0-d), B's vector and constant times row_scale;
    nothing for ``none`` (its parameter may not exist)."""
    if option.kind == "none":
        return {}
    if tensor in "DE":
        param = getattr(layer, tensor)
        return {"value": param if option.kind == "vector" else param[0]}
    down, up = getattr(layer, f"{tensor}d"), getattr(layer, f"{tensor}u")
    if option.kind == "lora":
        return {"down": down[:, : option.rank], "up": up[: option.rank]}
    value = down[:, 0] if option.kind == "vector" else down[0, 0]
    return {"value": value * layer.row_scale if tensor == "B" else value}


@torch.no_grad()
def _fill_path(path: nn.Module, form: str, option: Option, ours: dict[str, Tensor]) -> None:
    """Write one of our support tensors into a PEFT path of ``form`` (zeros first)."""
    if form == "none":
        return
    for param in path.parameters():
        param.zero_()
    if option.kind == "none":
        return
    if form == "lora":
        if option.kind == "lora":
            path.Xd[:, : option.rank] = ours["down"]
            path.Xu[: option.rank] = ours["up"]
        else:
            path.Xd[:, 0] = ours["value"]
            path.Xu[0] = 1.0
    else:  # vector (a column, or D/E's out-vector) or constant: broadcast ours into X
        path.X.copy_(ours["value"].reshape(-1).expand(path.X.numel()).reshape(path.X.shape))


def _copy_into(tmp: Path, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in PEFT_FILES:  # each file whole or absent, never half-written
        atomic_write(directory / name, lambda target, source=tmp / name: shutil.copyfile(source, target))


def to_peft(model: nn.Module, layout: Layout, directory: str | os.PathLike) -> Path:
    """Write ``model`` (wrapped, ``layout`` set, trained) as a PEFT GLoRA adapter in
    ``directory``: ``adapter_config.json`` and ``adapter_model.safetensors``, for
    ``PeftModel.from_pretrained(<plain backbone>, directory)``. The effective W and b of
    every targeted layer equal ours; the head goes in as ``modules_to_save``."""
    peft = _peft()
    space = space_of(model)
    bound = layout.check(space.target_layers(model), space, model_name(model))
    layers = glora_layers(model)
    differ = next((n for n, c in bound.layers.items() if layers[n].choice != c), None)
    if differ is not None:
        raise PeftExportError(f"to_peft: layer {differ!r} runs another choice than the layout given; call set_layout(model, layout) first")
    check_peft_exportable(model)
    forms = peft_forms(bound)
    config = peft.GloraConfig(r=forms["r"], target_modules=list(layers), config_A_B=forms["config_A_B"], config_C=forms["config_C"],
                              config_D_E=forms["config_D_E"], modules_to_save=_trained_modules(model) or None)
    tuned = peft.get_peft_model(_plain_twin(model).cpu(), config)
    tuned.peft_config["default"].base_model_name_or_path = model_name(model)  # what from_peft checks the backbone by
    for name, layer in layers.items():
        target = tuned.base_model.model.get_submodule(name)
        for tensor, option in zip(TENSORS, bound.layers[name]):
            if tensor in "CDE" and layer.bias is None:
                continue  # PEFT keeps no C, D, E on a layer without a bias; our space gives them none there
            path = getattr(target, f"glora_{tensor}")["default"]
            _fill_path(path, forms[_FIELD[tensor]], option, {k: v.detach().cpu() for k, v in _ours(layer, tensor, option).items()})
    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tuned.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)  # no hub lookup
        _copy_into(Path(tmp), directory)
    return directory


# ---- PEFT -> ours ---------------------------------------------------------------------
def _read_config(directory: Path, model: nn.Module) -> dict:
    """adapter_config.json, checked to be a GLoRA adapter for ``model``'s architecture."""
    where = directory / "adapter_config.json"
    if not where.is_file():
        raise CheckpointError(f"{str(directory)!r} holds no adapter_config.json; point at a PEFT adapter directory "
                              "(what PeftModel.save_pretrained or glora-retrain export.peft=true writes)")
    try:
        config = json.loads(where.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{where} is not JSON ({err}); re-save the adapter with PEFT") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} is not a JSON object; re-save the adapter with PEFT")
    if config.get("peft_type") != "GLORA":
        raise CheckpointError(f"{where} is a PEFT {config.get('peft_type')!r} adapter, not GLORA; only PEFT GLoRA adapters "
                              "become layouts (load the others with PeftModel.from_pretrained)")
    base = config.get("base_model_name_or_path")
    if base and base != model_name(model):
        raise CheckpointError(f"{where} is for base model {base!r} but the model given is {model_name(model)!r}; "
                              "pass the backbone the adapter was trained on")
    return config


def _space(names: list[str], forms: dict, r: int, model: nn.Module) -> Space:
    """The uniform space of a PEFT config: its forms, its rank, exactly its target layers."""
    options = {t: (forms[_FIELD[t]],) for t in TENSORS}
    default = Space(ranks=(r,), targets=DEFAULT_TARGETS, options=options)
    try:
        if list(default.target_layers(model)) == names:
            return default
    except SpaceError:
        pass
    return Space(ranks=(r,), targets="|".join(re.escape(n) for n in names), options=options)


def _our_option(form: str, r: int) -> str:
    return f"LoRA_{r}" if form == "lora" else form


@torch.no_grad()
def from_peft(model: nn.Module, directory: str | os.PathLike, vector_b: str = "mean") -> Layout:
    """Put the PEFT GLoRA adapter in ``directory`` on the plain ``model`` (the backbone it
    was trained on, head of the same size), in place, as our GLoRA layers, and return its
    (uniform) layout, bound to ``model``: the same logits as PEFT's model, and ``merge``
    gives PEFT's ``merge_and_unload()`` weights. ``modules_to_save`` load into the model
    and stay trainable. Any mismatch is one :class:`CheckpointError`."""
    peft = _peft()
    directory = Path(directory)
    if is_wrapped(model):
        raise CheckpointError("from_peft: the model is already wrapped with GLoRA; pass the plain backbone")
    config = _read_config(directory, model)
    try:
        tuned = peft.PeftModel.from_pretrained(copy.deepcopy(model), str(directory))
    except Exception as err:  # noqa: BLE001 - PEFT raises ValueError / RuntimeError / KeyError for a mismatched file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"PEFT adapter {str(directory)!r} does not load onto {model_name(model)} ({first[:300]}); "
                              "pass the backbone (and num_classes) it was trained on") from None
    from peft.tuners.glora.layer import GloraLinear
    from peft.utils import ModulesToSaveWrapper

    inner = tuned.base_model.model
    peft_layers = {name: m for name, m in inner.named_modules() if isinstance(m, GloraLinear)}
    saved = {name: m for name, m in inner.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    r = int(config.get("r", 8))
    forms = {name: config.get(name, default) for name, default in (("config_A_B", "lora"), ("config_C", "lora"), ("config_D_E", "constant"))}
    space = _space(list(peft_layers), forms, r, model)
    wrap(model, space, modules_to_train=tuple(saved), vector_b=vector_b)
    layout = set_layout(model, Layout.uniform(model, space, **{t: _our_option(forms[_FIELD[t]], r) for t in TENSORS}))
    for name, layer in glora_layers(model).items():
        source = peft_layers[name]
        for param in layer.support_parameters():
            param.zero_()
        for tensor, option in zip(TENSORS, layout.layers[name]):
            if option.kind == "none":
                continue
            path = getattr(source, f"glora_{tensor}")["default"]
            if tensor in "DE":
                getattr(layer, tensor)[: path.X.numel()] = path.X.reshape(-1)
                continue
            down, up = getattr(layer, f"{tensor}d"), getattr(layer, f"{tensor}u")
            if option.kind == "lora":
                down[:, :r], up[:r] = path.Xd, path.Xu
            else:
                value = path.X.reshape(-1) / (layer.row_scale if tensor == "B" else 1.0)
                if option.kind == "vector":
                    down[:, 0] = value
                else:
                    down[0, 0] = value[0]
    for name, wrapper in saved.items():
        model.get_submodule(name).load_state_dict(wrapper.modules_to_save["default"].state_dict())
    return layout
