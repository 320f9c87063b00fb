"""The ViT feed-forward block (timm's ``Mlp`` names: ``fc1``, ``fc2``) with
a leaner backward.

Plain autograd keeps both the hidden pre-activation ``h = fc1(x)`` (for
GELU's backward) and ``gelu(h)`` (for fc2's weight gradient): two
B×N×4C tensors per block, the largest activations of a ViT. Here fc2 and
GELU are one autograd function that keeps ``h`` alone and recomputes
``gelu(h)`` in backward. That is about a fifth of a ViT block's saved
activations, for one extra element-wise GELU per block.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class _GeluLinear(torch.autograd.Function):
    """``F.linear(F.gelu(h), weight, bias)``, saving ``h`` instead of ``gelu(h)``."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        h, weight = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad
        grad_h = grad_w = grad_b = None
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w:
            grad_w = flat_grad.t().mm(F.gelu(h).reshape(-1, h.shape[-1]))
        if need_b and ctx.has_bias:
            grad_b = flat_grad.sum(0)
        if need_h:
            grad_h = torch.ops.aten.gelu_backward(grad_out.matmul(weight), h)
        return grad_h, grad_w, grad_b


def gelu_linear(h: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``F.linear(F.gelu(h), weight, bias)`` with the lean backward; under
    autocast the inputs are cast as ``F.linear`` would cast them."""
    device = h.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _GeluLinear.apply(h.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
    return _GeluLinear.apply(h, weight, bias)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, timm's parameter names.

    The lean backward runs whenever autograd records and there is no
    dropout between GELU and fc2 (dropout needs the activation itself).
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if torch.is_grad_enabled() and not (self.training and self.drop1.p):
            return self.drop2(gelu_linear(h, self.fc2.weight, self.fc2.bias))
        return self.drop2(self.fc2(self.drop1(self.act(h))))
