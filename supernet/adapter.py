"""The adapter apart from the backbone: only what a fixed layout trains, in one safetensors
file of kilobytes, to share one backbone between many tasks (PEFT's ``adapter_model``).

The file holds, for every targeted layer, the slices of the support tensors its choice
uses, plus the task head. Each slice is the *leading block* of the layer's max-rank
parameter, so saving and loading follow one rule (``param[:rows, :cols]``):

=================  ==========================  =======================
choice             down (Ad, Bd / Cd)          up (Au, Bu / Cu), D, E
=================  ==========================  =======================
``LoRA_r``         out×r (C: in×r)             r×in (C: r×1)
``vector``         out×1 (C: in×1)             D, E: out
``constant``       1×1                         D, E: 1
``none``           nothing                     nothing
=================  ==========================  =======================

So the file's element count is ``layout.trainable_params`` plus the head's. The header
(``glora`` JSON, as in :mod:`glora.run.checkpoint`) carries the format tag, the model
name, the layout JSON and its hash, the model's ``vector_b`` and parameterisation (what
the stored B slices mean), the digest of the frozen backbone it was trained on
(:func:`backbone_digest`), any identity the caller adds, and a checksum of the tensors.
Loading never unpickles anything.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from glora.run.checkpoint import read_identity, tensors_digest
from glora.run.errors import CheckpointError
from glora.run.io import atomic_write
from glora.spaces import TENSORS, Choice, LayerShape, Layout, LayoutError, classifier_name, model_name

from .layer import VECTOR_B, parameterisation
from .wrap import glora_layers, is_wrapped, set_layout, space_of, vector_b_of, wrap

__all__ = ["ADAPTER_FORMAT", "adapter_state", "backbone_digest", "save_adapter", "load_adapter"]

log = logging.getLogger(__name__)

ADAPTER_FORMAT = "glora-adapter/1"

_RESERVED = ("format", "model", "layout", "layout_hash", "vector_b", "parameterisation", "backbone_digest")


def _slice_shapes(choice: Choice, shape: LayerShape) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the leading block a layer with ``choice`` uses."""
    out_f, in_f = shape.out_features, shape.in_features
    shapes: dict[str, tuple[int, ...]] = {}
    for tensor, option in zip(TENSORS, choice):
        if option.kind == "none":
            continue
        if tensor in "DE":
            shapes[tensor] = (out_f,) if option.kind == "vector" else (1,)
            continue
        rows, cols = (in_f, 1) if tensor == "C" else (out_f, in_f)
        if option.kind == "lora":
            shapes[f"{tensor}d"], shapes[f"{tensor}u"] = (rows, option.rank), (option.rank, cols)
        else:
            shapes[f"{tensor}d"] = (rows, 1) if option.kind == "vector" else (1, 1)
    return shapes


def _expected(model: nn.Module, layout: Layout) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape an adapter of ``layout`` (bound) holds for ``model`` (plain or wrapped)."""
    shapes = {f"{layer}.{param}": s for layer, choice in layout.layers.items()
              for param, s in _slice_shapes(choice, layout.shapes[layer]).items()}
    head = classifier_name(model)
    shapes.update({f"{head}.{k}": tuple(v.shape) for k, v in model.get_classifier().state_dict().items()})
    return shapes


def backbone_digest(model: nn.Module) -> str:
    """SHA-256 of the frozen backbone of ``model``, plain or wrapped (the same value for
    both): every tensor of its state dict (parameters and buffers, a GLoRA layer's
    ``base_layer`` under the plain layer's name) but the GLoRA support tensors and the
    task head, by name in sorted order, bytes of contiguous CPU tensors."""
    head = classifier_name(model) + "."
    layers = tuple(f"{name}." for name in glora_layers(model))
    tensors: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith(head):
            continue
        layer = next((p for p in layers if key.startswith(p)), None)
        if layer is not None:
            if not key.startswith(f"{layer}base_layer."):
                continue  # a support tensor (Ad ... E)
            key = layer + key[len(f"{layer}base_layer."):]
        tensors[key] = value
    return tensors_digest(tensors)


def _leading(param: Tensor, shape: tuple[int, ...]) -> Tensor:
    return param[tuple(slice(0, n) for n in shape)]


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The used slices of every layer's support tensors (``blocks.0.attn.qkv.Bd`` ...) and
    the head's tensors (``head.weight`` ...), detached copies, for a wrapped model with a
    fixed layout (``set_layout``)."""
    space_of(model)
    state: dict[str, Tensor] = {}
    for name, layer in glora_layers(model).items():
        choice = layer._fixed("adapter_state")
        shape = LayerShape(layer.out_features, layer.in_features, layer.bias is not None)
        for param, s in _slice_shapes(choice, shape).items():
            state[f"{name}.{param}"] = _leading(getattr(layer, param), s).detach().clone()
    head = classifier_name(model)
    state.update({f"{head}.{k}": v.detach().clone() for k, v in model.get_classifier().state_dict().items()})
    return state


def save_adapter(path: str | os.PathLike, model: nn.Module, layout: Layout, extra_identity: dict[str, Any] | None = None) -> Path:
    """Write ``adapter_state(model)`` to ``path`` (atomically) with the layout and identity
    in the header, with the model's ``vector_b`` and parameterisation so a loader rebuilds
    the same layers, and the backbone's digest so it refuses another backbone. ``layout`` must be the one set on ``model``; ``extra_identity`` (JSON:
    e.g. timm kwargs, num_classes) is stored for ``load_adapter``'s ``expect`` to check."""
    extra = dict(extra_identity or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra_identity may not set {clash}: save_adapter writes them itself")
    space = space_of(model)
    bound = layout.check(space.target_layers(model), space, model_name(model))
    layers = glora_layers(model)
    differ = next((n for n, c in bound.layers.items() if layers[n].choice != c), None)
    if differ is not None:
        raise LayoutError(f"save_adapter: layer {differ!r} runs another choice than the layout given; "
                          "call set_layout(model, layout) first")
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state(model).items()}
    vector_b = vector_b_of(model)
    identity = {"format": ADAPTER_FORMAT, "model": model_name(model), "layout": bound.to_dict(), "layout_hash": bound.hash,
                "vector_b": vector_b, "parameterisation": parameterisation(vector_b), "backbone_digest": backbone_digest(model), **extra}
    meta = {"glora": json.dumps(identity), "sha256": tensors_digest(tensors)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: Header field -> (required, test of its value, what it should be). vector_b and
#: parameterisation may be absent (an adapter made before them): ``_vector_b`` says so.
_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "model": (True, lambda v: isinstance(v, str) and bool(v), "a model name"),
    "layout": (True, lambda v: isinstance(v, dict), "a layout object"),
    "layout_hash": (True, lambda v: isinstance(v, str), "a string"),
    "vector_b": (False, lambda v: isinstance(v, str), "a string"),
    "parameterisation": (False, lambda v: isinstance(v, str), "a string"),
    "num_classes": (False, _is_count, "a whole number ≥ 1"),
    "backbone_digest": (False, lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "a sha256 hex string"),
}


def _check_header(identity: dict[str, Any], where: str) -> None:
    """The types of the header fields ``load_adapter`` reads, before any is used."""
    for key, (required, ok, expected) in _FIELDS.items():
        value = identity.get(key)
        if value is None:
            if required:
                raise CheckpointError(f"{where}: header field {key!r} is missing; re-export it")
        elif not ok(value):
            raise CheckpointError(f"{where}: header field {key!r} is {value!r}, expected {expected}; re-export it")


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The header identity (typed) and the tensors (checksum verified, finite) of an
    adapter file, read once."""
    where = f"adapter {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist; glora-retrain writes adapter.safetensors in its run dir")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            identity = read_identity(path, meta, "adapter")  # CheckpointError for a file this project did not write
            if identity.get("format") != ADAPTER_FORMAT:
                raise CheckpointError(f"{path} is not a GLoRA adapter (format {identity.get('format')!r}, expected "
                                      f"{ADAPTER_FORMAT!r}); a run dir's adapter is adapter.safetensors")
            _check_header(identity, where)
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{where} is truncated or corrupt ({err})") from None
    if tensors_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"{where} is corrupt: its tensors do not match the checksum written with them")
    bad = next((k for k in sorted(tensors) if tensors[k].is_floating_point() and not bool(torch.isfinite(tensors[k]).all())), None)
    if bad is not None:
        raise CheckpointError(f"{where}: tensor {bad!r} holds NaN or inf values; the run that wrote it diverged: "
                              "retrain it (glora-retrain) and use its new adapter")
    return identity, tensors


def _vector_b(model: nn.Module, identity: dict[str, Any], where: str) -> str:
    """The adapter's ``vector_b``, checked against its parameterisation and a wrapped ``model``'s."""
    vector_b = identity.get("vector_b")
    if vector_b not in VECTOR_B:
        raise CheckpointError(f"{where} records no usable glora.vector_b ({vector_b!r}; one of {sorted(VECTOR_B)} expected): "
                              "it predates glora.vector_b, so what its B slices mean is unknown; re-export it with glora-retrain")
    if identity.get("parameterisation") != parameterisation(vector_b):
        raise CheckpointError(f"{where} has parameterisation {identity.get('parameterisation')!r}, this version reads "
                              f"{parameterisation(vector_b)!r}; re-export it with glora-retrain")
    if is_wrapped(model) and vector_b_of(model) != vector_b:
        raise CheckpointError(f"{where} was trained with glora.vector_b={vector_b}, but the model is wrapped with "
                              f"vector_b={vector_b_of(model)}; pass the plain backbone (load_adapter wraps it)")
    return vector_b


def _bind(model: nn.Module, identity: dict[str, Any], where: str) -> Layout:
    """The adapter's layout bound to ``model``'s targeted layers, or one CheckpointError."""
    try:
        layout = Layout.from_dict(identity.get("layout"), source=where)
    except LayoutError as err:
        raise CheckpointError(str(err)) from None
    if layout.hash != identity.get("layout_hash"):
        raise CheckpointError(f"{where}: its layout does not hash to the recorded {identity.get('layout_hash')!r}; "
                              "the header was edited: re-export the adapter")
    if is_wrapped(model) and space_of(model).to_dict() != layout.space.to_dict():
        raise CheckpointError(f"{where} was trained under space {layout.space.to_dict()}, but the model is wrapped under "
                              f"{space_of(model).to_dict()}; pass the plain backbone (load_adapter wraps it)")
    try:
        return layout.check(layout.space.target_layers(model), layout.space, model_name(model))
    except (LayoutError, ValueError) as err:  # SpaceError: the space targets no layer of this model
        raise CheckpointError(f"{where}: {err}; build the backbone the adapter was trained on "
                              "(its run dir's model.json: name, kwargs, num_classes)") from None


def load_adapter(model: nn.Module, path: str | os.PathLike, expect: dict[str, Any] | None = None, *, check_backbone: bool = True) -> Layout:
    """Put the adapter at ``path`` on ``model`` in place and return its layout, bound to it
    (like ``PeftModel.from_pretrained(model, path)``).

    ``model`` is the backbone the adapter was trained on with a head of the same size:
    plain (it is wrapped here under the adapter's space and ``vector_b``, head trainable)
    or already wrapped under that space and ``vector_b``. The layout is set, each slice copied into the leading block
    of its max-rank parameter (every other entry zero), the head loaded. ``expect``'s
    keys must equal the identity the adapter was saved with. The backbone must be the one it
    was trained on (:func:`backbone_digest`; ``check_backbone=False`` skips that, and an
    adapter made before the digest was recorded loads with a warning). Everything is checked before
    ``model`` changes; any mismatch is one :class:`CheckpointError` naming what and the fix.
    """
    path = Path(path)
    where = f"adapter {str(path)!r}"
    identity, tensors = _read(path)
    if identity.get("model") != model_name(model):
        raise CheckpointError(f"{where} is for model {identity.get('model')!r} but this model is {model_name(model)!r}; "
                              "build the backbone it was trained on (its run dir's model.json: name, kwargs, num_classes)")
    for key, want in (expect or {}).items():
        if identity.get(key) != want:
            raise CheckpointError(f"{where} was saved with {key}={json.dumps(identity.get(key))}, but {key}={json.dumps(want)} "
                                  "is expected; use an adapter made with that setting")
    vector_b = _vector_b(model, identity, where)
    bound = _bind(model, identity, where)
    want = _expected(model, bound)
    extra, missing = sorted(set(tensors) - set(want)), sorted(set(want) - set(tensors))
    if extra:
        raise CheckpointError(f"{where} has tensor {extra[0]!r} that its layout {bound.hash} does not use "
                              f"({len(extra)} such); the file was not written by save_adapter: re-export it")
    if missing:
        raise CheckpointError(f"{where} lacks tensor {missing[0]!r} that its layout {bound.hash} needs "
                              f"({len(missing)} missing); the file is incomplete: re-export it")
    wrong = next((k for k in want if tuple(tensors[k].shape) != want[k]), None)
    if wrong is not None:
        raise CheckpointError(f"{where}: tensor {wrong!r} has shape {tuple(tensors[wrong].shape)} but this model needs "
                              f"{want[wrong]}; build the backbone (and num_classes) the adapter was trained on")
    if check_backbone:
        recorded = identity.get("backbone_digest")
        if recorded is None:
            log.warning("%s records no backbone digest (it predates glora.backbone_digest): loading it without checking "
                        "that this is the backbone it was trained on", where)
        elif (have := backbone_digest(model)) != recorded:
            raise CheckpointError(f"{where}: adapter was trained on another backbone (digest {recorded[:12]}…), this backbone "
                                  f"is {have[:12]}…; load it onto the backbone it was trained on, or pass check_backbone=False "
                                  "if you mean it")

    if not is_wrapped(model):
        wrap(model, bound.space, modules_to_train=(classifier_name(model),), vector_b=vector_b)
    bound = set_layout(model, bound)
    head = classifier_name(model)
    with torch.no_grad():
        for name, layer in glora_layers(model).items():
            for param in layer.support_parameters():
                param.zero_()
            for param, shape in _slice_shapes(bound.layers[name], bound.shapes[name]).items():
                _leading(getattr(layer, param), shape).copy_(tensors[f"{name}.{param}"])
        model.get_classifier().load_state_dict({k: tensors[f"{head}.{k}"] for k in model.get_classifier().state_dict()})
    return bound
