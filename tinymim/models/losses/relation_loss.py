"""TinyMIM's relation loss: KL(teacher ‖ student) of token relations.

A relation of two token projections ``a, b`` (B, heads, N, d) is
``softmax(a bᵀ / sqrt(d))`` over the keys (last axis); each side scales by
its own head size ``d``. The loss sums the KL over keys and averages it over
batch × heads × query rows (TinyMIM paper, relation distillation).

The relation is B×H×N×N: 3.8 GB in fp32 for a batch of 128 ViT-B images at
448 px. ``RelationKL`` therefore computes the loss in chunks of query rows,
saves only its (B, H, N, d) inputs, and recomputes each chunk in backward
with the closed-form gradient ``softmax(z_s) - p_t`` of the student logits
``z_s``, so forward and backward hold one chunk of relations at a time.
"""
from typing import Optional

import torch


def _logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """fp32 ``a bᵀ / sqrt(d)``: relations are softmax-ed, so they are kept in
    fp32 even under autocast (the caller disables it). Scaled in place: a
    fresh N x N-sized result per scaling costs page faults, not just the
    multiply (matmul's backward does not need its output, so autograd allows it)."""
    return (a.float() @ b.float().transpose(-2, -1)).mul_(a.shape[-1] ** -0.5)


def relation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The full relation ``softmax(a bᵀ / sqrt(d))`` (B, heads, N, N), fp32."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        return _logits(a, b).softmax(dim=-1)


def _check_shapes(s_a, s_b, t_a, t_b):
    if s_a.shape[-1] != s_b.shape[-1] or t_a.shape[-1] != t_b.shape[-1]:
        raise ValueError(f'a relation needs equal head sizes on one side: student {tuple(s_a.shape)} x '
                         f'{tuple(s_b.shape)}, teacher {tuple(t_a.shape)} x {tuple(t_b.shape)}')
    shapes = {tuple(x.shape[:-1]) for x in (s_a, s_b, t_a, t_b)}
    if len(shapes) != 1 or s_a.dim() != 4:
        raise ValueError('student and teacher relations need the same (batch, heads, tokens): student '
                         f'{tuple(s_a.shape)}, {tuple(s_b.shape)}; teacher {tuple(t_a.shape)}, {tuple(t_b.shape)}')


class RelationKL(torch.autograd.Function):
    """Chunked KL(softmax(t_a t_bᵀ/√d_t) ‖ softmax(s_a s_bᵀ/√d_s)), mean over rows.

    Gradients flow to the student inputs only; teacher inputs are constants.
    """

    @staticmethod
    def forward(ctx, s_a, s_b, t_a, t_b, chunk_size):
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            raise ValueError('teacher relation inputs must not require grad (run the teacher under no_grad)')
        # Q/K/V arrive as strided views of the qkv projection; without one copy
        # here every chunk's matmul copies its operands (~40 % of the loss's
        # time at 224 px, benchmarks/distill_step.py).
        s_a, s_b, t_a, t_b = (x.contiguous() for x in (s_a, s_b, t_a, t_b))
        n = s_a.shape[2]
        chunk = n if chunk_size is None else int(chunk_size)
        total = s_a.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=s_a.device.type, enabled=False):
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                log_ps = _logits(s_a[:, :, rows], s_b).log_softmax(dim=-1)
                log_pt = _logits(t_a[:, :, rows], t_b).log_softmax(dim=-1)
                # sum p_t * (log p_t - log p_s), in place (see _logits); it is
                # 0, not NaN, where p_t underflows.
                log_ps -= log_pt
                total -= log_ps.mul_(log_pt.exp_()).sum()
        ctx.save_for_backward(s_a, s_b, t_a, t_b)
        ctx.chunk = chunk
        return total / (s_a.shape[0] * s_a.shape[1] * n)

    @staticmethod
    def backward(ctx, grad_out):
        s_a, s_b, t_a, t_b = ctx.saved_tensors
        n = s_a.shape[2]
        # d loss / d logits_s = (softmax(logits_s) - p_t) / rows; logits_s = s_a s_bᵀ / sqrt(d).
        coef = grad_out.float() * s_a.shape[-1] ** -0.5 / (s_a.shape[0] * s_a.shape[1] * n)
        with torch.autocast(device_type=s_a.device.type, enabled=False):
            a32, b32 = s_a.float(), s_b.float()
            grad_a = torch.empty_like(a32)
            grad_b = torch.zeros_like(b32)
            for start in range(0, n, ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                diff = _logits(a32[:, :, rows], b32).softmax(dim=-1)
                diff -= _logits(t_a[:, :, rows], t_b).softmax(dim=-1)
                diff *= coef
                grad_a[:, :, rows] = diff @ b32
                grad_b += diff.transpose(-2, -1) @ a32[:, :, rows]
        return grad_a.to(s_a.dtype), grad_b.to(s_b.dtype), None, None, None


def relation_kl_loss(s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
                     chunk_size: Optional[int] = None) -> torch.Tensor:
    """KL(teacher relation ‖ student relation), summed over keys, averaged over
    batch × heads × queries; computed ``chunk_size`` query rows at a time
    (``None``: all rows at once)."""
    _check_shapes(s_a, s_b, t_a, t_b)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f'relation chunk_size must be a positive integer or None, got {chunk_size!r}')
    return RelationKL.apply(s_a, s_b, t_a, t_b, chunk_size)
