import pytest
import torch

from tests.helpers.autograd import saved_tensors
from tests.helpers.distill import naive_relation_kl
from tinymim.models.losses import feature_loss, relation_kl_loss, relation_matrix


def inputs(n=7, d_s=8, d_t=16, batch=2, heads=3, scale=2.0):
    s_a, s_b = (scale * torch.randn(batch, heads, n, d_s, requires_grad=True) for _ in range(2))
    t_a, t_b = (scale * torch.randn(batch, heads, n, d_t) for _ in range(2))
    return s_a, s_b, t_a, t_b


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


def test_matches_naive_kl_value_and_gradient():
    s_a, s_b, t_a, t_b = inputs()
    loss = relation_kl_loss(s_a, s_b, t_a, t_b)
    ref = naive_relation_kl(s_a, s_b, t_a, t_b)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-5
    for g, g_ref in zip(grads(loss, (s_a, s_b)), grads(ref, (s_a, s_b))):
        torch.testing.assert_close(g, g_ref.float(), atol=1e-5, rtol=1e-4)


def test_same_tensor_on_both_sides_vv():
    s_a, _, t_a, _ = inputs()
    loss = relation_kl_loss(s_a, s_a, t_a, t_a)
    ref = naive_relation_kl(s_a, s_a, t_a, t_a)
    assert abs(loss.item() - ref.item()) < 1e-5
    torch.testing.assert_close(grads(loss, s_a)[0], grads(ref, s_a)[0].float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('chunk', [1, 3, 5])
def test_chunked_equals_unchunked(chunk):
    s_a, s_b, t_a, t_b = inputs(n=11)
    full = relation_kl_loss(s_a, s_b, t_a, t_b, chunk_size=None)
    part = relation_kl_loss(s_a, s_b, t_a, t_b, chunk_size=chunk)
    torch.testing.assert_close(part, full, atol=1e-6, rtol=1e-6)
    for g, g_full in zip(grads(part, (s_a, s_b)), grads(full, (s_a, s_b))):
        torch.testing.assert_close(g, g_full, atol=1e-6, rtol=1e-5)


def test_backward_keeps_only_the_inputs():
    """Nothing N x N is saved for backward: memory stays at one chunk of relations."""
    s_a, s_b, t_a, t_b = inputs(n=197, d_s=16, d_t=16, batch=2, heads=2)
    loss, saved = saved_tensors(lambda: relation_kl_loss(s_a, s_b, t_a, t_b, chunk_size=32))
    one_relation = 2 * 2 * 197 * 197
    assert sum(t.numel() for t in saved) == 4 * s_a.numel() < one_relation
    assert all(g.shape == s_a.shape for g in grads(loss, (s_a, s_b)))


def test_autocast_keeps_fp32_relations():
    s_a, s_b, t_a, t_b = inputs()
    ref = relation_kl_loss(s_a, s_b, t_a, t_b)
    a16, b16 = s_a.detach().bfloat16().requires_grad_(), s_b.detach().bfloat16().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = relation_kl_loss(a16, b16, t_a.bfloat16(), t_b.bfloat16())
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 0.05 * ref.item()
    loss.backward()
    assert a16.grad.dtype == torch.bfloat16


def test_identical_relations_give_zero_loss():
    s_a, s_b, _, _ = inputs(d_t=8)
    assert relation_kl_loss(s_a, s_b, s_a.detach(), s_b.detach()).abs().item() < 1e-6
    rel = relation_matrix(s_a, s_b)
    torch.testing.assert_close(rel.sum(-1), torch.ones(2, 3, 7))


def test_bad_inputs_fail_clearly():
    s_a, s_b, t_a, t_b = inputs()
    with pytest.raises(ValueError, match='same \\(batch, heads, tokens\\)'):
        relation_kl_loss(s_a, s_b, t_a[:, :, :5], t_b[:, :, :5])
    with pytest.raises(ValueError, match='chunk_size'):
        relation_kl_loss(s_a, s_b, t_a, t_b, chunk_size=0)
    with pytest.raises(ValueError, match='must not require grad'):
        relation_kl_loss(s_a, s_b, t_a.requires_grad_(), t_b)


def test_feature_losses_by_hand():
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    diff = (s - t).abs()
    smooth = torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean()
    torch.testing.assert_close(feature_loss(s, t, 'smooth_l1'), smooth)
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    torch.testing.assert_close(feature_loss(s, t, 'cosine'), (1 - cos).mean())
    p_t, p_s = t.softmax(-1), s.softmax(-1)
    torch.testing.assert_close(feature_loss(s, t, 'kl'), (p_t * (p_t.log() - p_s.log())).sum(-1).mean())
    with pytest.raises(ValueError, match='unknown feature loss'):
        feature_loss(s, t, 'l2')
