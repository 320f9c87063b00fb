"""Drop path that skips the dropped samples' branch must be timm's drop
path in value and gradient, with the branch run on the kept samples only."""
import torch
import torch.nn as nn
from timm.layers import DropPath

from tinymim.models.layers import add_residual
from tinymim.models.vit import Block


class RecordingBranch(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        return torch.tanh(self.lin(x))


def run_both(rate, batch=16, seed=0, training=True):
    torch.manual_seed(seed)
    branch, drop_path = RecordingBranch(8), DropPath(rate).train(training)
    x = torch.randn(batch, 5, 8, dtype=torch.float64, requires_grad=True)
    branch.double()
    results = []
    for fn in (lambda: add_residual(x, branch, drop_path), lambda: x + drop_path(branch(x))):
        torch.manual_seed(seed + 1)  # the same mask draw on both sides
        out = fn()
        results.append((out, *torch.autograd.grad(out.square().sum(), (x, *branch.parameters()))))
    return results, branch.batch_sizes


def test_matches_timm_drop_path_and_runs_only_kept_samples():
    (ours, ref), sizes = run_both(0.5)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert sizes[1] == 16  # timm's side runs the whole batch
    assert 0 < sizes[0] < 16  # ours only the kept samples (seeded: some kept, some dropped)


def test_dropped_samples_pass_through_unchanged():
    torch.manual_seed(3)
    x = torch.randn(32, 4, 8)
    branch = RecordingBranch(8)
    drop_path = DropPath(0.5).train()
    torch.manual_seed(4)
    mask = x.new_empty((32,)).bernoulli_(0.5).bool()
    torch.manual_seed(4)
    out = add_residual(x, branch, drop_path)
    assert torch.equal(out[~mask], x[~mask])
    assert branch.batch_sizes == [int(mask.sum())]


def test_everything_dropped_eval_and_no_drop_path():
    x = torch.randn(4, 3, 8)
    branch = RecordingBranch(8)
    out = add_residual(x, branch, DropPath(1.0).train())
    assert torch.equal(out, x) and branch.batch_sizes == [4]
    torch.testing.assert_close(add_residual(x, branch, DropPath(0.3).eval()), x + branch(x))
    torch.testing.assert_close(add_residual(x, branch, nn.Identity()), x + branch(x))
    assert branch.batch_sizes == [4, 4, 4, 4, 4]


def test_block_with_every_sample_dropped_gives_zero_grads_not_none():
    """DDP with find_unused_parameters=False needs every parameter's gradient."""
    for impl in ('chunked', 'sdpa'):
        blk = Block(16, 2, drop_path=1.0, window=(2, 3), attn_impl=impl).train()
        x = torch.randn(2, 7, 16, requires_grad=True)
        out = blk(x, (2, 3))
        out.sum().backward()
        assert torch.equal(out, x)
        for name, p in blk.named_parameters():
            assert p.grad is not None and not p.grad.any(), (impl, name)


def test_block_with_drop_path_matches_timm_style_forward():
    torch.manual_seed(0)
    blk = Block(16, 2, drop_path=0.3, window=(2, 3)).double().train()
    x = torch.randn(8, 7, 16, dtype=torch.float64)

    def timm_style(t):
        t = t + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(t), (2, 3))))
        return t + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(t))))
    outs = []
    for fn in (lambda t: blk(t, (2, 3)), timm_style):
        torch.manual_seed(5)
        outs.append(fn(x))
    # timm draws each mask after its branch, ours before: with no dropout in
    # the branches no other random numbers are drawn, so the masks agree.
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert not torch.allclose(outs[0], blk.eval()(x, (2, 3)))  # some paths were dropped


def test_autocast_branch_keeps_the_residual_dtype():
    """Under autocast the branch returns bf16; the kept samples are added
    back into the fp32 residual stream, as ``x + drop_path(branch(x))`` does."""
    torch.manual_seed(0)
    lin, drop_path = nn.Linear(8, 8), DropPath(0.5).train()  # scale 2: exact in bf16
    x = torch.randn(16, 5, 8, requires_grad=True)
    outs = []
    for fn in (lambda: add_residual(x, lin, drop_path), lambda: x + drop_path(lin(x))):
        torch.manual_seed(1)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs.append(fn())
    assert outs[0].dtype == outs[1].dtype == torch.float32
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-2, atol=1e-2)
    outs[0].sum().backward()
    assert lin.weight.grad.dtype == torch.float32 and torch.isfinite(lin.weight.grad).all()
