"""GLoRALinear: one frozen ``nn.Linear`` (or 1×1 ``nn.Conv2d``) plus the five GLoRA support
tensors A–E.

    W = W0 + W0 ⊙ A + B        b = b0 + b0 ⊙ D + E + W0 · C        y = x Wᵀ + b

Each support tensor is stored once at the space's largest rank (the supernet's shared
weights); a ``LoRA_r`` choice uses the first ``r`` columns / rows, ``vector`` the first
column of the down factor, ``constant`` its first element. The forward only builds the
out×in weight when A is LoRA-form; every other form is applied to the base output or
through low-rank / vector paths.

A 1×1 convolution is the same linear map over channels at every pixel: its weight is read
as out×in, the input is moved channels-last, and every path (the fused ones included) runs
unchanged; the merge writes W back in the convolution's out×in×1×1 shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glora.spaces import TENSORS, Choice, Option, is_pointwise_conv, linear_shape

from .functional import lora_a_linear, scaled_linear

__all__ = ["SUPPORT_TENSOR", "UP_INITS", "VECTOR_B", "ChoiceSampler", "GLoRALinear", "parameterisation"]

#: How vector / constant B (W += b 1ᵀ·s) scale the broadcast row. ``sum`` (s = 1, the official
#: code and peft) adds b·Σx to every output, so its step grows with the layer's width and the
#: inputs' offset: on DINOv2 ViT-S, |Σx| is ~80 at fc2, and a supernet that draws these forms
#: never leaves chance. ``mean`` (s = 1/in) makes the row act on the inputs' mean.
VECTOR_B = {"mean": lambda in_features: 1.0 / in_features, "sum": lambda in_features: 1.0}


def parameterisation(vector_b: str) -> str:
    """What stored support tensors mean; checkpoints record it so weights trained under
    another meaning are refused instead of silently reinterpreted."""
    return f"glora-param/2 vector_b={vector_b}"

_NONE = Option("none")


#: How the random "up" factors start (the "down" factors start at zero either way): peft's
#: GLoRA uses Kaiming-uniform (a=√5), the official GLoRA code Xavier-uniform (~2.4× wider at width 768).
UP_INITS = {
    "kaiming": lambda weight: nn.init.kaiming_uniform_(weight, a=math.sqrt(5)),
    "xavier": nn.init.xavier_uniform_,
}

#: Each trainable tensor of the layer -> the support tensor it belongs to.
SUPPORT_TENSOR = {"Ad": "A", "Au": "A", "Bd": "B", "Bu": "B", "Cd": "C", "Cu": "C", "D": "D", "E": "E"}


class ChoiceSampler:
    """The seeded generator every layer of one supernet draws its random choice from.

    One shared generator (not global RNG state) keeps supernet training reproducible:
    layers draw in module-call order, so a seed fixes every step's layout.
    """

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator()
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def draw(self, choices: tuple[tuple[Option, ...], ...]) -> Choice:
        u = torch.rand(len(choices), generator=self.generator).tolist()
        return tuple(opts[min(int(x * len(opts)), len(opts) - 1)] for x, opts in zip(u, choices))  # type: ignore[return-value]


class GLoRALinear(nn.Module):
    """GLoRA around ``base_layer``, an ``nn.Linear`` or a 1×1 ``nn.Conv2d`` (kept, frozen, as a
    submodule so ``merge`` can hand back the very module timm built).

    ``choice`` is the fixed A–E choice, or ``None`` for supernet mode, where every forward
    draws an independent choice from ``sampler``.
    """

    def __init__(
        self,
        base_layer: nn.Linear | nn.Conv2d,
        choices: dict[str, tuple[Option, ...]],
        max_rank: int,
        sampler: ChoiceSampler | None = None,
        up_init: str = "kaiming",
        vector_b: str = "mean",
    ) -> None:
        super().__init__()
        shape = linear_shape(base_layer)
        if shape is None:
            raise TypeError(f"GLoRA wraps an nn.Linear or a 1x1 nn.Conv2d, not {base_layer!r}")
        self.pointwise = is_pointwise_conv(base_layer)
        self.base_layer = base_layer
        self.in_features, self.out_features = shape.in_features, shape.out_features
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.choices = tuple(choices[t] for t in TENSORS)
        self.sampler = sampler
        self.choice: Choice | None = None
        self.merged: tuple[Tensor, Tensor | None] | None = None  # set by supernet.merged_inference

        out_f, in_f = self.out_features, self.in_features
        rank = max(max_rank, 1)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}

        def kinds(tensor: str) -> set[str]:
            return {o.kind for o in choices[tensor]}

        def down(tensor: str, rows: int) -> nn.Parameter | None:
            return nn.Parameter(torch.zeros(rows, rank, **factory)) if kinds(tensor) - {"none"} else None

        def up(tensor: str, cols: int) -> nn.Parameter | None:
            if "lora" not in kinds(tensor):
                return None
            weight = torch.empty(rank, cols, **factory)
            UP_INITS[up_init](weight)
            return nn.Parameter(weight)

        def vec(tensor: str) -> nn.Parameter | None:
            return nn.Parameter(torch.zeros(out_f, **factory)) if kinds(tensor) - {"none"} else None

        # Down factors and D, E start at zero, so any subnet starts as the pretrained layer.
        self.row_scale = VECTOR_B[vector_b](in_f)  # vector / constant B: W += b 1ᵀ · row_scale
        self.Ad, self.Au = down("A", out_f), up("A", in_f)
        self.Bd, self.Bu = down("B", out_f), up("B", in_f)
        self.Cd, self.Cu = down("C", in_f), up("C", 1)
        self.D, self.E = vec("D"), vec("E")

    def get_base_layer(self) -> nn.Linear | nn.Conv2d:
        """The frozen layer this one stands for (PEFT's tuner-layer protocol)."""
        return self.base_layer

    @property
    def weight(self) -> Tensor:
        """W0 as out×in (a 1×1 convolution's kernel viewed without its 1×1 tail)."""
        weight = self.base_layer.weight
        return weight.view(self.out_features, self.in_features) if self.pointwise else weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def support_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.Ad, self.Au, self.Bd, self.Bu, self.Cd, self.Cu, self.D, self.E) if p is not None]

    # ---- the pieces of W and b ----------------------------------------------------
    def _scale(self, down: Tensor, up: Tensor | None, option: Option) -> Tensor:
        """A or B as a tensor broadcastable to out×in (full only for LoRA)."""
        if option.kind == "lora":
            return down[:, : option.rank] @ up[: option.rank]
        if option.kind == "vector":
            return down[:, :1]
        return down[0, 0]

    def _bias(self, choice: Choice) -> Tensor | None:
        b0 = self.bias
        if b0 is None:
            return None
        _, _, c, d, e = choice
        bias = b0
        if d.kind == "vector":
            bias = bias + b0 * self.D
        elif d.kind == "constant":
            bias = bias + b0 * self.D[0]
        if e.kind == "vector":
            bias = bias + self.E
        elif e.kind == "constant":
            bias = bias + self.E[0]
        if c.kind != "none":
            c_vec = self.Cd[:, : c.rank] @ self.Cu[: c.rank, 0] if c.kind == "lora" else self.Cd[:, 0]
            bias = bias + self.weight @ c_vec
        return bias

    def merged_weight_and_bias(self, choice: Choice | None = None) -> tuple[Tensor, Tensor | None]:
        """W and b of ``choice`` (default: the fixed choice) as plain tensors."""
        choice = choice if choice is not None else self._fixed("merge")
        a, b = choice[0], choice[1]
        weight = self.weight
        if a.kind != "none":
            weight = weight + weight * self._scale(self.Ad, self.Au, a)
        if b.kind == "lora":
            weight = weight + self._scale(self.Bd, self.Bu, b)
        elif b.kind != "none":
            weight = weight + self._b_row(b).expand_as(weight)
        return weight, self._bias(choice)

    def _b_row(self, b: Option) -> Tensor:
        """Vector / constant B's broadcast row times ``row_scale``: an out×1 column or a 0-d
        constant (the merge, the fused path and the plain forward all use this one)."""
        return (self.Bd[:, :1] if b.kind == "vector" else self.Bd[0, 0]) * self.row_scale

    def _b_factors(self, b: Option) -> tuple[Tensor | None, Tensor | None]:
        """B as (down, up) for ``lora_a_linear``: LoRA factors, an out×1 column, a 0-d constant."""
        if b.kind == "lora":
            return self.Bd[:, : b.rank], self.Bu[: b.rank]
        if b.kind in ("vector", "constant"):
            return self._b_row(b), None
        return None, None

    def _fixed(self, what: str) -> Choice:
        if self.choice is None:
            raise RuntimeError(f"{what} needs a fixed layout: call set_layout(model, layout) first")
        return self.choice

    # ---- forward --------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.merged is not None:  # inference of a fixed choice: one plain matmul (or 1×1 conv)
            weight, bias = self.merged
            return F.conv2d(x, weight[:, :, None, None], bias) if self.pointwise else F.linear(x, weight, bias)
        choice = self.choice
        if choice is None:
            if self.sampler is None:
                raise RuntimeError("GLoRALinear in supernet mode needs a sampler; use supernet.wrap()")
            choice = self.sampler.draw(self.choices)
        if self.pointwise:  # N×C×H×W: the linear map over channels, channels-last and back
            return self.forward_choice(x.movedim(1, -1), choice).movedim(-1, 1)
        return self.forward_choice(x, choice)

    def forward_choice(self, x: Tensor, choice: Choice) -> Tensor:
        a, b = choice[0], choice[1]
        bias = self._bias(choice)
        if a.kind == "lora":  # W0 ⊙ A is unavoidable: build W once, fold B into it (functional.py)
            b_down, b_up = self._b_factors(b)
            return lora_a_linear(x, self.weight, self.Ad[:, : a.rank], self.Au[: a.rank], b_down, b_up, bias)
        if a.kind == "none":
            y = F.linear(x, self.weight, bias)
        else:  # vector / constant A scale the base output: x (W0 + W0 ⊙ A)ᵀ = (x W0ᵀ) ⊙ (1 + a)
            y = scaled_linear(x, self.weight, self.Ad[:, 0] if a.kind == "vector" else self.Ad[0, 0], bias)
        if b.kind == "lora":
            y = y + F.linear(F.linear(x, self.Bu[: b.rank]), self.Bd[:, : b.rank])
        elif b.kind != "none":  # x (b 1ᵀ s)ᵀ = (Σ_in x) s b
            y = y + x.sum(-1, keepdim=True) * self._b_row(b).reshape(-1)
        return y

    def extra_repr(self) -> str:
        mode = "supernet" if self.choice is None else "/".join(str(o) for o in self.choice)
        kind = "1x1 conv, " if self.pointwise else ""
        return f"{kind}in_features={self.in_features}, out_features={self.out_features}, choice={mode}"
