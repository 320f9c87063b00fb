"""Attention with a trainable relative position bias, in blocks of query rows.

``softmax(Q Kᵀ/√d + B) V`` where ``B[h, i, j] = table[index[i, j], h]``
(BEiT's relative position bias). PyTorch's CPU ``scaled_dot_product_attention``
has no fused kernel that returns the mask's gradient, so with a trainable
bias it falls back to the math path, which keeps the B×H×N×N probabilities
of every block for backward.

This function keeps only Q, K, V, the output and one log-sum-exp per row.
Backward recomputes the probabilities ``chunk`` query rows at a time (as
flash attention does) and scatters the bias gradient straight into the
table, so neither the full bias nor its B×H×N×N gradient ever exists.
Its memory and speed against the math path are in docs/performance.md
(benchmarks/seg_step.py measures the whole training step).
"""
import torch

DEFAULT_CHUNK = 128


def _chunk_scores(q_scaled, k_t, table_t, index, r0, r1):
    """Scores of query rows ``r0:r1`` with their bias, and the table columns
    those rows use (for the bias gradient)."""
    rows = index[r0:r1].reshape(-1)
    s = torch.matmul(q_scaled[:, :, r0:r1], k_t)
    return s.add_(table_t.index_select(1, rows).view(table_t.shape[0], r1 - r0, -1)), rows


class _ChunkedRelPosAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, table_t, index, chunk):
        b, h, n, d = q.shape
        # Q is kept pre-scaled: backward needs only q·d^-½ (dK = dSᵀ (q·d^-½)).
        q_scaled, k, v = q.contiguous() * d ** -0.5, k.contiguous(), v.contiguous()
        k_t = k.transpose(-2, -1)
        # Tokens-first (B, N, H, d) storage: the block's output projection
        # then reads it as (B, N, H·d) without a copy.
        out = q.new_empty(b, n, h, d).transpose(1, 2)
        lse = q.new_empty(b, h, n)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            s, _ = _chunk_scores(q_scaled, k_t, table_t, index, r0, r1)
            row_lse = torch.logsumexp(s, -1, keepdim=True)
            out[:, :, r0:r1] = torch.matmul(s.sub_(row_lse).exp_(), v)
            lse[:, :, r0:r1] = row_lse.squeeze(-1)
        ctx.save_for_backward(q_scaled, k, v, table_t, out, lse)
        ctx.index, ctx.chunk = index, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q_scaled, k, v, table_t, out, lse = ctx.saved_tensors
        index, chunk = ctx.index, ctx.chunk
        n, d = q_scaled.shape[-2:]
        grad_out = grad_out.contiguous()
        # dS = P ∘ (dP - rowsum(dO ∘ O)), the softmax backward without P stored.
        delta = (grad_out * out).sum(-1, keepdim=True)
        k_t, v_t = k.transpose(-2, -1), v.transpose(-2, -1)
        grad_q = torch.empty_like(q_scaled)
        grad_k, grad_v, grad_table = torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(table_t)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            p, rows = _chunk_scores(q_scaled, k_t, table_t, index, r0, r1)
            p.sub_(lse[:, :, r0:r1, None]).exp_()
            g_out = grad_out[:, :, r0:r1]
            grad_v.add_(torch.matmul(p.transpose(-2, -1), g_out))
            ds = torch.matmul(g_out, v_t).sub_(delta[:, :, r0:r1]).mul_(p)
            grad_table.index_add_(1, rows, ds.sum(0).view(table_t.shape[0], -1))
            torch.matmul(ds, k, out=grad_q[:, :, r0:r1])
            grad_k.add_(torch.matmul(ds.transpose(-2, -1), q_scaled[:, :, r0:r1]))
        return grad_q.mul_(d ** -0.5), grad_k, grad_v, grad_table, None, None


def chunked_relpos_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table_t: torch.Tensor,
                             index: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``softmax(q kᵀ/√d + bias) v`` with ``bias[h, i, j] = table_t[h, index[i, j]]``.

    Args:
        q, k, v: (B, H, N, d), fp32 or fp64 (the log-sum-exp is kept in
            their dtype).
        table_t: (H, T) heads-first bias table; it gets the gradient.
        index: (N, N) long, entries in ``[0, T)``.
        chunk: query rows per block (the default's timing: docs/performance.md).
    """
    if q.dtype not in (torch.float32, torch.float64):
        raise TypeError(f'chunked_relpos_attention computes in fp32/fp64; got {q.dtype}')
    n = q.shape[-2]
    if index.shape != (n, n) or table_t.shape[0] != q.shape[1]:
        raise ValueError(f'bias index {tuple(index.shape)} / table {tuple(table_t.shape)} do not fit '
                         f'{q.shape[1]} heads and {n} tokens')
    return _ChunkedRelPosAttention.apply(q, k, v, table_t.to(q.dtype), index, int(chunk))
