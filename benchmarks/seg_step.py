"""UperNet-ViT at 512x512: our ``TinyMIMViT`` against mmseg's ``MAE`` backbone.

Both sides are built from our UperNet config (``mmseg_configs/upernet/``)
and differ only in the backbone: ``TinyMIMViT`` (inference: SDPA with the
cached relative position bias as its mask; training on CPU: the chunked
attention that trains the bias without keeping N×N maps, the MLP that
recomputes GELU in backward, drop path that skips dropped samples) or
mmseg's ``MAE`` (BEiT attention, softmax materialised). They hold the same weights: the script initialises
the mmseg model once, and our side loads that file through
``tinymim.models.vit_weights.load_vit_checkpoint`` (the neck and heads have
the same keys). Relative-bias tables get random values so the bias path is
exercised; layer scale is on, as in fine-tuning. Inference outputs of the
two sides are compared (``max |Δ|``).

Parts (``--parts``):
  backbone  the ViT alone, inference, a batch of 512x512 images;
  whole     UperNet inference on one 512x512 image;
  slide     UperNet sliding-window inference (512 window, stride 341) on a
            512x683 image (two windows; scaled with ``--crop``);
  train     one training step: UperNet loss (decode + auxiliary head),
            backward, AdamW step, ``--train-batch`` 512x512 crops. Our side
            skips the branches drop path drops, so its work depends on the
            draw: call r (warm-up included) is seeded with r on both sides,
            the time is the mean over the timed calls (not the best) and
            the peak memory the highest.

``--amp``: bf16 autocast on both sides (the baseline is mmseg's backbone,
not an fp16 eager model).

Example: ``python benchmarks/seg_step.py --archs base --parts backbone,whole,slide,train``
(the default, ``--parts backbone,whole``, stays under ~3 minutes for ViT-B on 2 cores).
"""
import argparse
import itertools
import os
import os.path as osp
import statistics
from functools import partial

import torch
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
    measure,
    per_round,
    ratio,
    run_sides,
    scratch_dir,
    span,
    worker_setup,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'mmseg_configs/upernet/upernet_tinymim-vit-{}_8xb2-160k_ade20k-512x512.py')
# name: config suffix; the '-light' configs have the decoder at the ViT's width, the others ViT-B's 768
ARCHS = {'tiny': 't', 'small': 's', 'base': 'b', 'tiny-light': 't-light', 'small-light': 's-light'}
PARTS = ('backbone', 'whole', 'slide', 'train')
COLUMNS = ['model', 'part', 'ours img/s', 'mmseg MAE img/s', 'speed ratio (wall)', 'speed ratio (CPU time)',
           'ours peak MiB', 'mmseg peak MiB', 'memory ratio', 'max |Δ| out']
SLIDE_ASPECT = 683 / 512  # ADE20K-like image: two 512 windows at stride 341


def model_name(arch: str) -> str:
    size, _, light = ARCHS[arch].partition('-')
    return f'ViT-{size.upper()}' + (' light' if light else '')


# ------------------------------------------------------------ model cfgs
def _cpu_norms(cfg):
    """SyncBN -> BN: one process, no process group (same on both sides)."""
    if isinstance(cfg, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else _cpu_norms(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_cpu_norms(v) for v in cfg]
    return cfg


def model_cfg(arch: str, impl: str, device: str, crop: int) -> dict:
    """Our UperNet config's model for ``arch``; ``impl='mmseg'`` swaps in mmseg's MAE backbone."""
    from mmengine.config import Config, ConfigDict

    from tinymim.models.vit import resolve_arch
    cfg = Config.fromfile(CONFIG.format(ARCHS[arch])).model.to_dict()
    cfg.update(pretrained=None, data_preprocessor=None)
    stride = round(crop * 341 / 512)  # the recipe's 512/341 window and stride, scaled
    cfg['test_cfg'] = dict(cfg['test_cfg'], mode='slide', crop_size=(crop, crop), stride=(stride, stride))
    cfg['backbone']['img_size'] = crop
    if impl == 'mmseg':
        ours = cfg['backbone']
        dims = resolve_arch(ours['arch'])  # the config's arch: its head count may differ from the zoo's
        cfg['backbone'] = dict(
            type='MAE', img_size=crop, patch_size=16, embed_dims=dims['embed_dims'],
            num_layers=dims['num_layers'], num_heads=dims['num_heads'], mlp_ratio=4,
            out_indices=list(ours['out_indices']), drop_path_rate=ours['drop_path_rate'],
            norm_cfg=dict(type='LN', eps=1e-6), init_values=ours['layer_scale_init_value'])
        # ViTEncoderDecoder fills widths from our backbone only; give them explicitly.
        width = dims['embed_dims']
        out = cfg['neck'].get('out_channels') or width
        cfg['neck']['in_channels'] = [width] * 4
        cfg['decode_head']['in_channels'] = [out] * 4
        cfg['auxiliary_head']['in_channels'] = out
    return ConfigDict(_cpu_norms(cfg) if device == 'cpu' else cfg)  # mmseg reads test_cfg.mode


def build_segmentor(arch: str, impl: str, device: str, crop: int):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import tinymim  # noqa: F401  (registers TinyMIMViT, ViTEncoderDecoder)
    register_all_modules(init_default_scope=True)
    return MODELS.build(model_cfg(arch, impl, device, crop))


def make_weights(arch: str, crop: int, path: str) -> None:
    """Save the state dict of a freshly initialised mmseg-MAE UperNet."""
    torch.manual_seed(0)
    model = build_segmentor(arch, 'mmseg', 'cpu', crop)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                p.normal_(std=0.02)  # mmseg's MAE starts them at zero; random values exercise the bias
    torch.save(model.state_dict(), path)


def load_weights(model, impl: str, path: str, backbone_only: bool) -> None:
    state = torch.load(path, map_location='cpu', weights_only=True)
    if backbone_only:
        if impl == 'mmseg':
            model.load_state_dict({k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')},
                                  strict=True)
        else:
            from tinymim.models.vit_weights import load_vit_checkpoint
            load_vit_checkpoint(model, path)
        return
    # Module by module, strictly: ViTEncoderDecoder's own load path expects a ViT of ours
    # as the backbone, and the mmseg side's is mmseg's MAE.
    for name, module in model.named_children():
        if name == 'backbone' and impl == 'ours':
            from tinymim.models.vit_weights import load_vit_checkpoint
            load_vit_checkpoint(module, path)
        else:
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + '.')},
                                   strict=True)


# ---------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    spec = worker_setup(args)
    device, part, impl = args.device, spec['part'], spec['impl']
    crop = spec['crop']
    model = build_segmentor(spec['arch'], impl, device, crop)
    if part == 'backbone':
        model = model.backbone
    load_weights(model, impl, spec['weights'], backbone_only=part == 'backbone')
    model.to(device)
    if spec['compile']:
        if part == 'backbone':
            model = torch.compile(model)
        else:
            model.backbone = torch.compile(model.backbone)
    amp = autocast(device, spec['amp'])
    torch.manual_seed(1)

    if part == 'train':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        model.train()
        batch = spec['train_batch']
        inputs = torch.randn(batch, 3, crop, crop, device=device)
        samples = []
        for _ in range(batch):
            s = SegDataSample(metainfo=dict(img_shape=(crop, crop), pad_shape=(crop, crop), ori_shape=(crop, crop)))
            s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, crop, crop), device=device))
            samples.append(s)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        seeds = itertools.count()

        def step():
            torch.manual_seed(next(seeds))  # drop-path draws: call r gets seed r on both sides
            with amp:
                losses = model.loss(inputs, samples)
            loss = sum(v for k, v in losses.items() if 'loss' in k)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        result = measure(step, device, args.warmup, args.repeats)
        # Our work depends on the draw: the mean over the seeds, not the luckiest one.
        result['seconds'] = statistics.mean(t[0] for t in result['times'])
        result['cpu_seconds'] = statistics.mean(t[1] for t in result['times'])
        result['images'] = batch
        emit(result)
        return

    model.eval()
    if part == 'backbone':
        inputs = torch.randn(spec['batch'], 3, crop, crop, device=device)

        def run():
            with torch.inference_mode(), amp:
                return model(inputs)
        images = spec['batch']
    else:
        h, w = (crop, crop) if part == 'whole' else (crop, round(crop * SLIDE_ASPECT))
        inputs = torch.randn(1, 3, h, w, device=device)
        meta = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])]
        model.test_cfg.mode = part

        def run():
            with torch.inference_mode(), amp:
                return model.inference(inputs, meta)
        images = 1
    result = measure(run, device, args.warmup, args.repeats)
    out = run()
    out = torch.cat([o.flatten() for o in out]) if isinstance(out, (tuple, list)) else out.flatten()
    torch.save(out.float().cpu(), spec['output'])
    result['images'] = images
    emit(result)


# ---------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', default='base', help=f'comma-separated, of {", ".join(ARCHS)} (default base)')
    parser.add_argument('--parts', default='backbone,whole',
                        help=f'comma-separated subset of {PARTS} (default backbone,whole: ~3 min for ViT-B on 2 cores)')
    parser.add_argument('--crop', type=int, default=512, help='crop / window size (default 512, the recipe)')
    parser.add_argument('--batch', type=int, default=1, help='images per backbone inference call')
    parser.add_argument('--train-batch', type=int, default=2,
                        help='crops per training step (default 2, the recipe per GPU; BatchNorm needs >= 2)')
    add_common_args(parser)
    args = parser.parse_args()
    check_device(args.device)
    if args.worker:
        worker(args)
        return
    archs = [a.strip() for a in args.archs.split(',')]
    parts = [p.strip() for p in args.parts.split(',')]
    bad = [a for a in archs if a not in ARCHS] + [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f'unknown arch/part {bad}; archs: {sorted(ARCHS)}, parts: {PARTS}')

    rows, failed = [], 0
    with scratch_dir() as tmp:
        for arch in archs:
            weights = osp.join(tmp, f'{arch}.pth')
            make_weights(arch, args.crop, weights)
            for part in parts:
                specs = {impl: dict(arch=arch, part=part, impl=impl, weights=weights, batch=args.batch,
                                    crop=args.crop, train_batch=args.train_batch,
                                    output=osp.join(tmp, f'{arch}_{part}_{impl}.pt'),
                                    compile=args.compile and impl == 'ours', amp=args.amp)
                         for impl in ('ours', 'mmseg')}
                try:
                    res, outs = run_sides(__file__, specs, args), {}
                except WorkerFailed as err:  # e.g. out of memory: the row says so, the next ones still run
                    rows.append(failed_row([model_name(arch), part], err, len(COLUMNS)))
                    failed += 1
                    continue
                if part != 'train':
                    for impl, spec in specs.items():
                        outs[impl] = torch.load(spec['output'], weights_only=True)
                        os.remove(spec['output'])
                ips = {k: [r['images'] / r['seconds'] for r in runs] for k, runs in res.items()}
                peak = {k: [r['peak_mib'] for r in runs] for k, runs in res.items()}
                diff = f"{(outs['ours'] - outs['mmseg']).abs().max().item():.1e}" if outs else '-'
                rows.append([model_name(arch), part, span(ips['ours']), span(ips['mmseg']),
                             span(per_round(ratio, ips['ours'], ips['mmseg'])),
                             span(per_round(partial(cpu_time_ratio, args.device), res['mmseg'], res['ours'])),
                             span(peak['ours']), span(peak['mmseg']),
                             span(per_round(ratio, peak['ours'], peak['mmseg'])), diff])
    amp = ' + bf16 autocast, both sides' if args.amp else ''
    print(f'\nUperNet-ViT {args.crop}x{args.crop}, {args.device}, fp32{amp}'
          f'{", ours compiled" if args.compile else ""}; each figure: min–max over {args.rounds} alternating '
          f'round(s) (max |Δ| out: the last round); {machine_line(args.device, args.threads)}\n')
    print(markdown_table(COLUMNS, rows))
    exit_if_failed(failed)


if __name__ == '__main__':
    main()
