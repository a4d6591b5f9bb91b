"""GLoRA's two A paths as autograd Functions that keep no out×in or tokens×out temporaries
beyond what their gradients need.

LoRA-form A is the one path that needs the full weight:

    y = x Wᵀ + b,   W = W0 + W0 ⊙ (A_d A_u) + B

Autograd would keep several out×in temporaries alive (A_d A_u, W0 ⊙ ·, the sum) and walk
back through each. Here W is built once, in place, in the parameters' dtype; backward takes
the one weight gradient gW = gᵀx that no method can avoid and derives every support
tensor's gradient from it with small matmuls:

    ∂A_d = (gW ⊙ W0) A_uᵀ    ∂A_u = A_dᵀ (gW ⊙ W0)    ∂B_d = gW B_uᵀ    ∂B_u = B_dᵀ gW
    (vector B: row sums of gW; constant B: its total)

Vector / constant A scale the base output, ``y = (x W0ᵀ) ⊙ (1 + a) + b``: forward is one
fused multiply-add over the output; backward gets ∂a = Σ_tokens g ⊙ (x W0ᵀ) and pushes the
input gradient through W0 ⊙ (1 + a) (out×in, built once) instead of scaling g (tokens×out).

Under autocast (bf16 on GPU) the two big matmuls run in the autocast dtype and the support
maths in the parameters' dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lora_a_linear", "scaled_linear"]


def _compute_dtype(x: Tensor, param_dtype: torch.dtype) -> torch.dtype:
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return param_dtype


class _LoRAALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w0: Tensor, a_down: Tensor, a_up: Tensor, b_down: Tensor | None, b_up: Tensor | None,
                bias: Tensor | None) -> Tensor:
        dtype = _compute_dtype(x, w0.dtype)
        with torch.autocast(x.device.type, enabled=False):
            weight = torch.mm(a_down, a_up)  # one out×in buffer, then in place: W0 + W0 ⊙ (A_d A_u)
            torch.addcmul(w0, weight, w0, out=weight)
            if b_up is not None:
                weight.addmm_(b_down, b_up)
            elif b_down is not None:  # vector (out×1) or constant (0-d): broadcast over the row
                weight.add_(b_down)
            weight = weight.to(dtype)
            x_c = x.to(dtype)
            y = F.linear(x_c, weight, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x_c, weight, w0, a_down, a_up, b_down, b_up)
        ctx.x_dtype = x.dtype
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, w0, a_down, a_up, b_down, b_up = ctx.saved_tensors
        needs = ctx.needs_input_grad
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
            grad_x = (g @ weight).view(*grad.shape[:-1], weight.shape[1]).to(ctx.x_dtype) if needs[0] else None
            grad_bias = g.sum(0).to(w0.dtype) if ctx.has_bias and needs[6] else None
            grad_w = (g.t() @ x.reshape(-1, x.shape[-1])).to(w0.dtype)  # the one full weight gradient
            grad_bd = grad_bu = None
            if b_up is not None:
                grad_bd = grad_w @ b_up.t() if needs[4] else None
                grad_bu = b_down.t() @ grad_w if needs[5] else None
            elif b_down is not None and needs[4]:
                grad_bd = grad_w.sum() if b_down.dim() == 0 else grad_w.sum(1, keepdim=True)
            grad_w.mul_(w0)  # now the gradient of W0 ⊙ (A_d A_u) w.r.t. A_d A_u
            grad_ad = grad_w @ a_up.t() if needs[2] else None
            grad_au = a_down.t() @ grad_w if needs[3] else None
        return grad_x, None, grad_ad, grad_au, grad_bd, grad_bu, grad_bias


def lora_a_linear(x: Tensor, w0: Tensor, a_down: Tensor, a_up: Tensor, b_down: Tensor | None = None,
                  b_up: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """``x (W0 + W0 ⊙ (a_down a_up) + B)ᵀ + bias`` with B = ``b_down b_up`` (LoRA), a column
    ``b_down`` (out×1, vector), a 0-d ``b_down`` (constant) or absent."""
    return _LoRAALinear.apply(x, w0, a_down, a_up, b_down, b_up, bias)


class _ScaledLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w0: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
        dtype = _compute_dtype(x, w0.dtype)
        with torch.autocast(x.device.type, enabled=False):
            x_c = x.to(dtype)
            base = F.linear(x_c, w0.to(dtype))
            factor = (scale + 1).to(dtype)
            y = base * factor if bias is None else torch.addcmul(bias.to(dtype), base, factor)
        ctx.save_for_backward(base, w0, scale)
        ctx.x_dtype = x.dtype
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        base, w0, scale = ctx.saved_tensors
        needs = ctx.needs_input_grad
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.reshape(-1, grad.shape[-1])
            grad_x = grad_scale = grad_bias = None
            if needs[0]:
                weight = w0 * (scale + 1).reshape(-1, 1) if scale.dim() else w0 * (scale + 1)
                grad_x = (g @ weight.to(g.dtype)).view(*grad.shape[:-1], w0.shape[1]).to(ctx.x_dtype)
            if needs[2]:
                per_out = (g * base.reshape(-1, base.shape[-1])).sum(0, dtype=scale.dtype)
                grad_scale = per_out if scale.dim() else per_out.sum()
            if ctx.has_bias and needs[3]:
                grad_bias = g.sum(0, dtype=w0.dtype)
        return grad_x, None, grad_scale, grad_bias


def scaled_linear(x: Tensor, w0: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    """``(x W0ᵀ) ⊙ (1 + scale) + bias``, ``scale`` a per-output vector or a 0-d constant."""
    return _ScaledLinear.apply(x, w0, scale, bias)
