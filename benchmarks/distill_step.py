"""One TinyMIM distillation step: ``TinyMIMDistiller`` against a plain eager baseline.

A step is the teacher forward (frozen, up to the Q/K/V of its distilled
block), the student forward to the same point, the QK + VV relation KL,
backward and an AdamW step on the student.

* ours: ``TinyMIMDistiller`` built from ``mmseg_configs/distill/`` (SDPA
  attention, the chunked relation loss with its closed-form backward, the
  MLP that recomputes GELU in backward, drop path that skips the dropped
  samples' branches) and the configs' optimizer (fused AdamW).
* eager: written below as plain PyTorch. Every block materialises its
  softmax attention, as the reference code does, and the relation loss
  materialises both relations' log-softmax for autograd. It gets the same
  weights (same parameter names) and does the same work otherwise: teacher
  under ``no_grad``, nothing computed past the distilled blocks, and the
  reference's plain ``torch.optim.AdamW`` (torch's default implementation:
  a per-tensor loop on CPU) with the same hyper-parameters, and timm's
  ``DropPath`` and ``Mlp``. So the ratio measures attention, loss, MLP,
  drop path, optimizer kernel and (``--compile``) compiler, not work that
  both sides skip.

Same work, checked: before each configuration is timed, one step of each
side (same weights, inputs and drop-path seed, at most 8 images, the
timed flags) must give the same loss and the same gradient for every
student parameter (``SAME_WORK_TOLERANCE``); otherwise the row fails and
nothing is timed. Each side then runs in ``--rounds`` alternating fresh
workers and every figure is the range over the rounds (see common.py).

Achieved FLOP/s: the FLOPs each side executes in one step, counted by
``torch.utils.flop_counter`` (matmuls, attention and convolutions, forward
and backward; a compiled step is counted as its eager code, which
``torch.compile`` runs under the counter), against a large ``torch.mm``
measured in the same run at the step's precision (fp32, or bf16 with
``--amp``): per CPU-second on CPU, per second on CUDA. Ours executes fewer:
drop path skips the dropped samples' branches
(``tinymim.models.layers.add_residual``). Every step is seeded alike, so both
sides drop the same samples in every timed step and in the count. Compiled
code runs drop path on the whole batch, but the count runs the eager code:
with ``--compile`` the "ours" count and its % of peak err low by the
dropped share (about 2 % at 224 px); the MFU column does not use it.

Model-FLOPs utilization (MFU, the "ours MFU" column): the model's FLOPs,
taken as the eager side's count (the arithmetic as written: every sample,
nothing recomputed), per second of our step, against ``--peak-tflops``
(the device's datasheet peak at the step's precision) or, without it, the
measured ``torch.mm`` peak. ``--loss-memory`` adds the peak memory of the
relation loss alone (forward + backward, fp32 and eager whatever the flags,
ViT-B teacher to ViT-S student shapes) at several resolutions.

Example: ``python benchmarks/distill_step.py --pairs b-s,s-t --res 224 --batch 8``.
"""
import argparse
import os.path as osp
import sys
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from common import (
    WorkerFailed,
    add_common_args,
    autocast,
    check_device,
    cpu_time_ratio,
    emit,
    exit_if_failed,
    failed_row,
    machine_line,
    markdown_table,
    matmul_peak,
    measure,
    per_round,
    percent,
    ratio,
    run_sides,
    run_worker,
    scratch_dir,
    span,
    worker_setup,
)
from timm.layers import DropPath, Mlp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STEP_COLUMNS = ['pair', 'px', 'batch', 'ours img/s', 'eager img/s', 'speed ratio (wall)', 'speed ratio (CPU time)',
                'ours peak MiB', 'eager peak MiB', 'memory ratio', 'ours GFLOP', 'eager GFLOP', 'ours % of mm peak',
                'eager % of mm peak', 'ours MFU']
LOSS_COLUMNS = ['px', 'tokens N', 'one B×H×N×N fp32 MiB', 'ours peak MiB', 'eager peak MiB', 'memory ratio']
PAIRS = {  # name: distillation config
    'l-b': 'tinymim_mae-vit-l_to_vit-b_32xb128-300e_in1k.py',
    'b-s': 'tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py',
    's-t': 'tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py',
}


# ------------------------------------------------------- eager baseline
class EagerAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def split(self, x, heads):
        b, n, c = x.shape
        return self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.split(x, self.heads)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)  # materialised
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EagerBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EagerAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class EagerViT(nn.Module):
    """timm-style ViT with our parameter names, so state dicts load both ways."""

    def __init__(self, vit):
        super().__init__()
        dim = vit.embed_dims
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, vit.patch_size, vit.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros_like(vit.pos_embed), requires_grad=vit.pos_embed.requires_grad)
        rates = [getattr(b.drop_path1, 'drop_prob', 0.) for b in vit.blocks]
        mlp_ratio = vit.blocks[0].mlp.fc1.out_features / dim
        self.blocks = nn.ModuleList(EagerBlock(dim, vit.num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.load_state_dict(vit.state_dict(), strict=True)
        self.pos_embed.requires_grad_(vit.pos_embed.requires_grad)  # fixed sin-cos on the student

    def tap_qkv(self, x, block_index, heads):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks[:block_index]:
            x = blk(x)
        blk = self.blocks[block_index]
        return blk.attn.split(blk.norm1(x), heads)


def eager_relation_kl(s_a, s_b, t_a, t_b):
    log_s = (s_a @ s_b.transpose(-2, -1) * s_a.shape[-1] ** -0.5).log_softmax(-1)
    log_t = (t_a @ t_b.transpose(-2, -1) * t_a.shape[-1] ** -0.5).log_softmax(-1)
    return F.kl_div(log_s, log_t, reduction='sum', log_target=True) / log_s.shape[:-1].numel()


# ------------------------------------------------------------ the models
def load_config(pair: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, 'mmseg_configs/distill', PAIRS[pair]))


def build_distiller(pair: str, res: int, teacher_ckpt: str, compile: bool = False):
    from mmseg.registry import MODELS

    import tinymim  # noqa: F401  (registers the distiller)
    cfg = load_config(pair).model
    cfg.teacher.update(checkpoint=teacher_ckpt, img_size=res)
    cfg.student.update(img_size=res)
    cfg.compile = compile  # the distiller's switch: torch.compile both forward_tap
    return MODELS.build(cfg)


def build_optimizer(pair: str, impl: str, params) -> torch.optim.Optimizer:
    """The config's optimizer for ours; for the baseline, plain ``torch.optim``
    of the same type and hyper-parameters without implementation switches
    (``fused``/``foreach``), as the reference builds it. One parameter
    group on both sides; lr fixed (timing only)."""
    from mmengine.registry import OPTIMIZERS
    cfg = dict(load_config(pair).optim_wrapper.optimizer, lr=1e-4)
    if impl == 'ours':
        return OPTIMIZERS.build(dict(cfg, params=params))
    kwargs = {k: v for k, v in cfg.items() if k not in ('type', 'fused', 'foreach')}
    return getattr(torch.optim, cfg['type'])(params, **kwargs)


def make_teacher(pair: str, res: int, path: str) -> None:
    """Save random teacher weights (timm keys) for the pair."""
    from tinymim.models.vit import VisionTransformer
    cfg = load_config(pair).model.teacher
    torch.manual_seed(0)
    cfg = {k: v for k, v in cfg.items() if k != 'checkpoint'}
    torch.save(VisionTransformer(**dict(cfg, img_size=res)).state_dict(), path)


def build_sides(spec, device, impls=('ours', 'eager')) -> dict:
    """For each of ``impls``: the loss closure of one step and the student
    parameters it trains, by name. Both sides start from one distiller's
    weights and take the same inputs."""
    torch.manual_seed(0)
    distiller = build_distiller(spec['pair'], spec['res'], spec['teacher'], spec['compile'])
    batch, res = spec['batch'], spec['res']
    views = dict(teacher=torch.randn(batch, 3, res, res, device=device),
                 student=torch.randn(batch, 3, res, res, device=device))
    # --amp: bf16 autocast on both sides, so that they do the same work at the same precision.
    amp = autocast(device, spec['amp'])
    sides = {impl: None for impl in impls}
    if 'eager' in sides:  # copies the weights before ours moves them
        sides['eager'] = eager_side(distiller, views, amp, device)
    if 'ours' in sides:
        sides['ours'] = ours_side(distiller, views, amp, device)
    return sides


def ours_side(distiller, views, amp, device):
    model = distiller.to(device).train()

    def loss():
        with amp:
            return sum(model.loss(views).values())
    return loss, {name[len('student.'):]: p for name, p in model.named_parameters() if p.requires_grad}


def eager_side(distiller, views, amp, device):
    t_idx, s_idx, heads = distiller.teacher_block - 1, distiller.student_block - 1, distiller.relation_heads
    teacher = EagerViT(distiller.teacher).to(device).eval().requires_grad_(False)
    student = EagerViT(distiller.student).to(device).train()
    student.blocks[s_idx].drop_path = nn.Identity()  # as the distiller does

    def loss():
        with amp:
            with torch.no_grad():
                tq, tk, tv = teacher.tap_qkv(views['teacher'], t_idx, heads)
            sq, sk, sv = student.tap_qkv(views['student'], s_idx, heads)
            return eager_relation_kl(sq, sk, tq, tk) + eager_relation_kl(sv, sv, tv, tv)
    return loss, {name: p for name, p in student.named_parameters() if p.requires_grad}


def step_fn(spec, device):
    """The step closure for ``spec['impl']``: loss, backward, optimizer step."""
    loss, params = build_sides(spec, device, (spec['impl'],))[spec['impl']]
    optimizer = build_optimizer(spec['pair'], spec['impl'], list(params.values()))

    def step():
        torch.manual_seed(0)  # the same drop-path masks in every timed step (and in the FLOP count)
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


# Tolerances of the same-work check: the loss's relative difference, and each
# gradient's relative distance ||g_ours - g_eager|| / ||g_eager||. In fp32 the
# two sides differ by summation order only (measured: 1e-7 and 3e-6 at 32-64
# px); bf16 rounds every matmul input, differently on the two sides (measured:
# 1e-3 and 4e-2). 0.15 is a cosine similarity of about 0.99; a wrong mask,
# scale or term moves a gradient by its own size.
SAME_WORK_TOLERANCE = {False: (1e-4, 1e-3), True: (2e-2, 0.15)}  # keyed by --amp


def check_same_work(spec, device) -> str:
    """Before timing: the eager baseline must compute our loss and our
    gradients. One step of each side from the same weights, inputs and
    drop-path seed, on at most 8 images; raises ``AssertionError`` naming the
    loss or the parameter that differs, else returns a line for the output."""
    spec = dict(spec, batch=min(spec['batch'], 8))
    results = {}
    for impl, (loss_fn, params) in build_sides(spec, device).items():
        torch.manual_seed(0)  # the timed steps' drop-path masks
        loss = loss_fn()
        loss.backward()
        results[impl] = loss.item(), {n: p.grad.float() for n, p in params.items() if p.grad is not None}
    (loss_ours, grads), (loss_eager, ref) = results['ours'], results['eager']
    loss_tol, grad_tol = SAME_WORK_TOLERANCE[bool(spec['amp'])]
    loss_diff = abs(loss_ours - loss_eager) / abs(loss_eager)
    what = f"{spec['pair']} at {spec['res']} px, batch {spec['batch']}"
    assert loss_diff <= loss_tol, (f'{what}: the eager baseline computes another loss: {loss_eager:.6g} vs ours '
                                   f'{loss_ours:.6g} (relative difference {loss_diff:.1e} > {loss_tol:g})')
    assert grads.keys() == ref.keys(), (f'{what}: parameters with a gradient differ: ours only '
                                        f'{sorted(set(grads) - set(ref))}, eager only {sorted(set(ref) - set(grads))}')
    dist = {n: ((grads[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref.items()}
    worst = max(dist, key=dist.get)
    assert dist[worst] <= grad_tol, (f'{what}: the gradient of {worst} differs between the sides: relative '
                                     f'distance {dist[worst]:.1e} > {grad_tol:g}')
    return (f'{what}: loss {loss_ours:.6g} (ours) vs {loss_eager:.6g} (eager), relative difference '
            f'{loss_diff:.1e}; {len(ref)} gradients, largest relative distance {dist[worst]:.1e} ({worst})')


def loss_memory_worker(spec, device):
    """Peak memory of the relation loss alone (QK + VV, forward + backward),
    fp32. Q/K/V are strided views of one (B, N, 3, heads, d) tensor, as the
    ViT's taps hand them over (``Attention.split_heads``)."""
    from tinymim.models.losses import relation_kl_loss
    n = (spec['res'] // 16) ** 2 + 1
    b, heads = spec['batch'], 12

    def taps(head_dim, requires_grad):
        qkv = torch.randn(b, n, 3, heads, head_dim, device=device, requires_grad=requires_grad)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)
    s, t = taps(32, True), taps(64, False)

    def run():
        if spec['impl'] == 'ours':
            loss = relation_kl_loss(s[0], s[1], t[0], t[1], spec['chunk']) + relation_kl_loss(s[2], s[2], t[2], t[2],
                                                                                            spec['chunk'])
        else:
            loss = eager_relation_kl(s[0], s[1], t[0], t[1]) + eager_relation_kl(s[2], s[2], t[2], t[2])
        loss.backward()
    return measure(run, device, 0, 1)


def worker(args):
    spec = worker_setup(args)
    if spec.get('peak'):
        emit(matmul_peak(args.device, spec['size'], dtype=getattr(torch, spec['dtype'])))
        return
    if spec.get('loss_memory'):
        emit(loss_memory_worker(spec, args.device))
        return
    step = step_fn(spec, args.device)
    result = measure(step, args.device, args.warmup, args.repeats)
    result['flops'] = count_flops(step)
    emit(result)


def count_flops(fn) -> int:
    """Matmul, attention and convolution FLOPs ``fn`` executes, forward and backward.

    ``torch.utils.flop_counter`` has no formula for CPU flash attention; it
    gets the generic SDPA ones here.
    """
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    formulas = {  # the counter passes shapes
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, **kwargs: fc.sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad_out, q, k, v, *args, **kwargs: fc.sdpa_backward_flop_count(grad_out, q, k, v),
    }
    with fc.FlopCounterMode(display=False, custom_mapping=formulas) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------- parent
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pairs', default='b-s', help=f'comma-separated teacher-student pairs from {sorted(PAIRS)}')
    parser.add_argument('--res', default='224', help='comma-separated input sizes, e.g. 224,448')
    parser.add_argument('--batch', type=int, default=8, help='images per step')
    parser.add_argument('--loss-memory', default='224,448,640',
                        help="sizes for the relation-loss-alone memory table ('' to skip)")
    parser.add_argument('--loss-batch', type=int, default=4, help='batch of the relation-loss memory table')
    parser.add_argument('--peak-size', type=int, default=4096, help='matrix size of the matmul peak measurement')
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help='datasheet peak of the device at the step\'s precision (e.g. dense bf16 with --amp), '
                             'for the MFU column; default: the measured torch.mm peak')
    add_common_args(parser)
    args = parser.parse_args()
    check_device(args.device)
    if args.worker:
        worker(args)
        return
    pairs = [p.strip() for p in args.pairs.split(',')]
    if set(pairs) - set(PAIRS):
        raise SystemExit(f'unknown pairs {sorted(set(pairs) - set(PAIRS))}; choose from {sorted(PAIRS)}')
    sizes = [int(r) for r in args.res.split(',')]
    if args.batch < 1 or args.loss_batch < 1:
        raise SystemExit(f'--batch and --loss-batch must be at least 1, got {args.batch} and {args.loss_batch}')

    dtype = 'bfloat16' if args.amp else 'float32'
    peak = run_worker(__file__, dict(peak=True, size=args.peak_size, dtype=dtype), args)
    # FLOP/s on the clock that counts the work: CPU-seconds on CPU (see common.py), seconds on CUDA.
    if args.device == 'cpu':
        clock, peak_rate = 'cpu_seconds', peak['flops_per_cpu_s']
    else:
        clock, peak_rate = 'seconds', peak['flops_per_s']
    mfu_peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_rate
    mfu_clock = 'seconds' if args.peak_tflops else clock
    rows, failed = [], 0
    checks = []
    with scratch_dir() as tmp:
        for pair in pairs:
            for res in sizes:
                teacher = osp.join(tmp, f'{pair}_{res}.pth')
                make_teacher(pair, res, teacher)
                label = [pair.upper().replace('-', '→'), res, args.batch]
                specs = {impl: dict(pair=pair, impl=impl, res=res, batch=args.batch, teacher=teacher,
                                    compile=args.compile and impl == 'ours', amp=args.amp)
                         for impl in ('ours', 'eager')}
                try:
                    checks.append(check_same_work(specs['ours'], args.device))
                    if args.device == 'cuda':
                        torch.cuda.empty_cache()  # the check's models are gone; the workers measure alone
                    out = run_sides(__file__, specs, args)
                except AssertionError as err:  # the baseline does other work: nothing is timed
                    print(err, file=sys.stderr)
                    rows.append(failed_row(label, WorkerFailed(str(err), f'same-work check: {err}'), len(STEP_COLUMNS)))
                    failed += 1
                    continue
                except WorkerFailed as err:  # e.g. out of memory: the row says so, the next ones still run
                    rows.append(failed_row(label, err, len(STEP_COLUMNS)))
                    failed += 1
                    continue
                ours, eager = out['ours'], out['eager']
                ips = {k: [args.batch / r['seconds'] for r in runs] for k, runs in out.items()}
                peak_mib = {k: [r['peak_mib'] for r in runs] for k, runs in out.items()}
                util = {k: span([r['flops'] / r[clock] / peak_rate for r in runs], percent) for k, runs in out.items()}
                gflop = {k: span([r['flops'] / 1e9 for r in runs], lambda v: f'{v:.4g}') for k, runs in out.items()}
                rows.append([*label, span(ips['ours']), span(ips['eager']),
                             span(per_round(ratio, ips['ours'], ips['eager'])),
                             span(per_round(partial(cpu_time_ratio, args.device), eager, ours)),
                             span(peak_mib['ours']), span(peak_mib['eager']),
                             span(per_round(ratio, peak_mib['ours'], peak_mib['eager'])), gflop['ours'], gflop['eager'],
                             util['ours'], util['eager'],
                             span(per_round(lambda o, e: e['flops'] / o[mfu_clock] / mfu_peak, ours, eager), percent)])
        loss_rows = []
        for res in [int(r) for r in args.loss_memory.split(',') if r.strip()]:
            n = (res // 16) ** 2 + 1
            try:
                mem = run_sides(__file__, {impl: dict(loss_memory=True, impl=impl, res=res, batch=args.loss_batch,
                                                      chunk=64) for impl in ('ours', 'eager')}, args)
            except WorkerFailed as err:
                loss_rows.append(failed_row([res, n], err, len(LOSS_COLUMNS)))
                failed += 1
                continue
            peak_mib = {k: [r['peak_mib'] for r in runs] for k, runs in mem.items()}
            one_relation = args.loss_batch * 12 * n * n * 4 / 2**20
            loss_rows.append([res, n, one_relation, span(peak_mib['ours']), span(peak_mib['eager']),
                              span(per_round(ratio, peak_mib['ours'], peak_mib['eager']))])

    precision = 'fp32' + (' + bf16 autocast, both sides' if args.amp else '')
    mfu_ref = f'datasheet peak {args.peak_tflops:g} TFLOP/s' if args.peak_tflops else 'the measured matmul peak'
    print(f'\nDistillation step, {args.device}, {precision}{", ours compiled" if args.compile else ""}; '
          f'matmul peak {peak["flops_per_s"] / 1e9:.0f} GFLOP/s wall, {peak["flops_per_cpu_s"] / 1e9:.0f} GFLOP '
          f'per CPU-second ({args.peak_size}² {dtype} torch.mm); MFU against {mfu_ref}; '
          f'each figure: min–max over {args.rounds} alternating round(s); {machine_line(args.device, args.threads)}\n')
    print(markdown_table(STEP_COLUMNS, rows))
    if checks:
        print('\nSame work, checked before timing (one step of each side from the same weights, inputs and '
              'drop-path masks):\n')
        print('\n'.join(f'- {line}' for line in checks))
    if loss_rows:
        print(f'\nRelation loss alone (QK + VV, forward + backward; fp32, not compiled, whatever the flags; '
              f'batch {args.loss_batch}, 12 heads, strided Q/K/V as the taps give them, chunks of 64 rows; '
              f'min–max over {args.rounds} alternating round(s))\n')
        print(markdown_table(LOSS_COLUMNS, loss_rows))
    exit_if_failed(failed)


if __name__ == '__main__':
    main()
