"""LayerNorm followed by a Linear, with a leaner backward.

Plain autograd keeps the LayerNorm's input (for its backward) and its
output (for the Linear's weight gradient): two B×N×C tensors for each of
a ViT block's two norms. Here the pair is one autograd function that keeps
the input and the per-token mean and 1/std, and recomputes the normalised
tensor in backward: one B×N×C tensor fewer per norm, for one extra
element-wise LayerNorm (measured savings: docs/performance.md).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class _LayerNormLinear(torch.autograd.Function):
    """``F.linear(F.layer_norm(x, ...), weight, bias)``, saving ``x`` instead of the normalised tensor."""

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight, bias, dtype):
        shape = (x.shape[-1],)
        y, mean, rstd = torch.native_layer_norm(x, shape, norm_weight, norm_bias, eps)
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, weight)
        ctx.eps, ctx.dtype, ctx.has_bias = eps, dtype, bias is not None
        return F.linear(y.to(dtype), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, mean, rstd, norm_weight, norm_bias, weight = ctx.saved_tensors
        need_x, need_nw, need_nb, _, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = grad_nw = grad_nb = grad_w = grad_b = None
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w:
            y = torch.native_layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, ctx.eps)[0]
            grad_w = flat_grad.t().mm(y.to(ctx.dtype).reshape(-1, y.shape[-1]))
        if need_b and ctx.has_bias:
            grad_b = flat_grad.sum(0)
        if need_x or need_nw or need_nb:
            grad_y = grad_out.matmul(weight).to(x.dtype)
            grad_x, grad_nw, grad_nb = torch.ops.aten.native_layer_norm_backward(
                grad_y, x, (x.shape[-1],), mean, rstd, norm_weight, norm_bias, [need_x, need_nw, need_nb])
        return grad_x, grad_nw, grad_nb, None, grad_w, grad_b, None


def layernorm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """``linear(norm(x))``; while autograd records, with the lean backward.

    Under autocast the norm runs in ``x``'s dtype and the Linear in the
    autocast dtype, as the two modules would run there.
    """
    if not torch.is_grad_enabled() or not norm.elementwise_affine:
        return linear(norm(x))
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        weight, bias = linear.weight.to(dtype), None if linear.bias is None else linear.bias.to(dtype)
        with torch.autocast(device, enabled=False):
            return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, weight, bias, dtype)
    return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, x.dtype)
