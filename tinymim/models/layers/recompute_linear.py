"""A Linear whose backward keeps only its input, with an optional GELU
before it and layer scale after it.

``γ · linear(gelu(h))`` in plain autograd keeps ``h`` (for GELU's
backward), ``gelu(h)`` (for the weight gradient) and the Linear's output
(for γ's gradient). Here it is one autograd function that keeps ``h``
alone: ``gelu(h)`` is recomputed in backward, and γ's gradient comes from
the weight-gradient product ``gᵀ·gelu(h)`` that backward forms anyway
(``∂γ_i = Σ_j (gᵀa)_ij W_ij + b_i Σ_n g_ni``). In a ViT block (fc2 with
GELU, the attention projection) that is three B×N×C-or-wider tensors
fewer per block, for one extra element-wise GELU.
"""
from typing import Optional

import torch
import torch.nn.functional as F


class _RecomputeLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, gelu):
        ctx.save_for_backward(x, weight, bias, gamma)
        ctx.gelu = gelu
        out = F.linear(F.gelu(x) if gelu else x, weight, bias)
        return out if gamma is None else out.mul_(gamma)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, gamma = ctx.saved_tensors
        need_x, need_w, need_b, need_gamma, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = grad_gamma = None
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w or need_gamma:
            a = F.gelu(x) if ctx.gelu else x
            g_a = flat_grad.t().mm(a.reshape(-1, a.shape[-1]))  # the weight gradient without γ
            grad_w = g_a if gamma is None else g_a * gamma[:, None]
        if need_b or need_gamma:
            g_sum = flat_grad.sum(0)
            grad_b = g_sum if gamma is None else g_sum * gamma
        if need_gamma:
            grad_gamma = (g_a * weight).sum(1) + (0 if bias is None else g_sum * bias)
        if need_x:
            grad_a = (grad_out if gamma is None else grad_out * gamma).matmul(weight)
            grad_x = torch.ops.aten.gelu_backward(grad_a, x) if ctx.gelu else grad_a
        return (grad_x, grad_w if need_w else None, grad_b if need_b and bias is not None else None,
                grad_gamma, None)


def recompute_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                gamma: Optional[torch.Tensor] = None, gelu: bool = False) -> torch.Tensor:
    """``gamma * F.linear(gelu(x) if gelu else x, weight, bias)`` with the lean
    backward (``gamma=None``: no layer scale); under autocast the inputs
    are cast as ``F.linear`` would cast them."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        cast = [None if t is None else t.to(dtype) for t in (x, weight, bias, gamma)]
        with torch.autocast(device, enabled=False):
            return _RecomputeLinear.apply(*cast, gelu)
    return _RecomputeLinear.apply(x, weight, bias, gamma, gelu)
