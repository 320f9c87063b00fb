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

Achieved FLOP/s: the FLOPs each side executes in one step, counted by
``torch.utils.flop_counter`` (matmuls, attention and convolutions, forward
and backward; a compiled step is counted as its eager code, which
``torch.compile`` runs under the counter), against a large ``torch.mm``
measured in the same run at the step's precision (fp32, or bf16 with
``--amp``): per CPU-second on CPU, per second on CUDA. Ours executes fewer:
drop path skips the dropped samples' branches
(``tinymim.models.vit.add_residual``). Every step is seeded alike, so both
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
    ratio,
    run_sides,
    run_worker,
    scratch_dir,
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


def step_fn(spec, device):
    """The step closure for ``spec['impl']`` and the student parameters it trains."""
    torch.manual_seed(0)
    distiller = build_distiller(spec['pair'], spec['res'], spec['teacher'], spec['compile'])
    batch, res = spec['batch'], spec['res']
    teacher_x = torch.randn(batch, 3, res, res, device=device)
    student_x = torch.randn(batch, 3, res, res, device=device)
    # --amp: bf16 autocast on both sides, so that they do the same work at the same precision.
    amp = autocast(device, spec['amp'])
    t_idx, s_idx = distiller.teacher_block - 1, distiller.student_block - 1
    heads = distiller.relation_heads

    if spec['impl'] == 'ours':
        model = distiller.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]

        def loss():
            with amp:
                return sum(model.loss(dict(teacher=teacher_x, student=student_x)).values())
    else:
        teacher = EagerViT(distiller.teacher).to(device).eval().requires_grad_(False)
        student = EagerViT(distiller.student).to(device).train()
        student.blocks[s_idx].drop_path = nn.Identity()  # as the distiller does
        params = [p for p in student.parameters() if p.requires_grad]

        def loss():
            with amp:
                with torch.no_grad():
                    tq, tk, tv = teacher.tap_qkv(teacher_x, t_idx, heads)
                sq, sk, sv = student.tap_qkv(student_x, s_idx, heads)
                return eager_relation_kl(sq, sk, tq, tk) + eager_relation_kl(sv, sv, tv, tv)
    optimizer = build_optimizer(spec['pair'], spec['impl'], params)

    def step():
        torch.manual_seed(0)  # the same drop-path masks in every timed step (and in the FLOP count)
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


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
    with scratch_dir() as tmp:
        for pair in pairs:
            for res in sizes:
                teacher = osp.join(tmp, f'{pair}_{res}.pth')
                make_teacher(pair, res, teacher)
                try:
                    out = run_sides(__file__, {impl: dict(pair=pair, impl=impl, res=res, batch=args.batch,
                                                          teacher=teacher, compile=args.compile and impl == 'ours',
                                                          amp=args.amp)
                                               for impl in ('ours', 'eager')}, args)
                except WorkerFailed as err:  # e.g. out of memory: the row says so, the next ones still run
                    rows.append(failed_row([pair.upper().replace('-', '→'), res, args.batch], err, len(STEP_COLUMNS)))
                    failed += 1
                    continue
                ips = {k: args.batch / v['seconds'] for k, v in out.items()}
                util = {k: f"{v['flops'] / v[clock] / peak_rate:.0%}" for k, v in out.items()}
                mfu = f"{out['eager']['flops'] / out['ours'][mfu_clock] / mfu_peak:.0%}"
                gflop = {k: f"{v['flops'] / 1e9:.4g}" for k, v in out.items()}
                rows.append([pair.upper().replace('-', '→'), res, args.batch, ips['ours'], ips['eager'],
                             ratio(ips['ours'], ips['eager']),
                             cpu_time_ratio(args.device, out['eager'], out['ours']),
                             out['ours']['peak_mib'], out['eager']['peak_mib'],
                             ratio(out['ours']['peak_mib'], out['eager']['peak_mib']), gflop['ours'], gflop['eager'],
                             util['ours'], util['eager'], mfu])
        loss_rows = []
        for res in [int(r) for r in args.loss_memory.split(',') if r.strip()]:
            n = (res // 16) ** 2 + 1
            try:
                mem = {impl: run_worker(__file__, dict(loss_memory=True, impl=impl, res=res, batch=args.loss_batch,
                                                       chunk=64), args)['peak_mib'] for impl in ('ours', 'eager')}
            except WorkerFailed as err:
                loss_rows.append(failed_row([res, n], err, len(LOSS_COLUMNS)))
                failed += 1
                continue
            one_relation = args.loss_batch * 12 * n * n * 4 / 2**20
            loss_rows.append([res, n, one_relation, mem['ours'], mem['eager'], ratio(mem['ours'], mem['eager'])])

    precision = 'fp32' + (' + bf16 autocast, both sides' if args.amp else '')
    mfu_ref = f'datasheet peak {args.peak_tflops:g} TFLOP/s' if args.peak_tflops else 'the measured matmul peak'
    print(f'\nDistillation step, {args.device}, {precision}{", ours compiled" if args.compile else ""}; '
          f'matmul peak {peak["flops_per_s"] / 1e9:.0f} GFLOP/s wall, {peak["flops_per_cpu_s"] / 1e9:.0f} GFLOP '
          f'per CPU-second ({args.peak_size}² {dtype} torch.mm); MFU against {mfu_ref}; '
          f'{machine_line(args.device, args.threads)}\n')
    print(markdown_table(STEP_COLUMNS, rows))
    if loss_rows:
        print(f'\nRelation loss alone (QK + VV, forward + backward; fp32, not compiled, whatever the flags; '
              f'batch {args.loss_batch}, 12 heads, strided Q/K/V as the taps give them, chunks of 64 rows)\n')
        print(markdown_table(LOSS_COLUMNS, loss_rows))
    exit_if_failed(failed)


if __name__ == '__main__':
    main()
