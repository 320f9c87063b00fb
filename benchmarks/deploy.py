"""UperNet-ViT inference at 512x512: eager PyTorch against ONNX Runtime fp32 and INT8.

Four sides per model, each in fresh worker processes (``common.run_sides``):

  ours      our ``TinyMIMViT`` UperNet in eager PyTorch (``model.inference``, whole image);
  mmseg     mmseg's ``MAE`` backbone under the same neck and heads, same weights;
  ort-fp32  our model exported by ``tinymim.deploy.export`` (normalisation in the
            graph, dynamic batch), in ONNX Runtime;
  ort-int8  that file quantised by ``tinymim.deploy.quantize`` (static, QDQ,
            MatMul/Conv with the default exclusions), calibrated on four
            photographs that scikit-image ships. ``--int8`` adds other
            quantisation choices as rows (``INT8_VARIANTS``), e.g. to measure
            what an exclusion costs or saves.

The weights are random (``seg_step.make_weights``: a fresh mmseg-MAE UperNet,
relative-bias tables drawn at random; both PyTorch sides load the same file,
as in ``seg_step.py``). Latency is one 512x512 image (best of ``--repeats``);
throughput is a batch of ``--batch`` images. Every side runs with the same
threads (``--threads``, default all cores: torch threads, ONNX Runtime
intra-op threads). Parity compares each side's logits on the first image (a
photograph) with ours: the max relative difference, and the share of pixels
whose argmax class agrees. Speed ratios are to ours, measured in the same
invocation: on a machine shared with other jobs compare ratios, not the
absolute numbers.

``--dynamic-shapes`` adds the fp32 model exported with free height and width
(``--dynamic``), to measure what that costs.

Example: ``python benchmarks/deploy.py --archs tiny,small --dynamic-shapes``
(long on 2 cores: every side of every model runs in ``--rounds`` fresh
processes at 512 px; ``--archs tiny --crop 64`` is a smoke test).
"""
import argparse
import gc
import os.path as osp

import numpy as np
import torch
from common import (
    WorkerFailed,
    add_common_args,
    check_device,
    emit,
    exit_if_failed,
    failed_row,
    machine_line,
    markdown_table,
    per_round,
    ratio,
    run_sides,
    scratch_dir,
    span,
    time_runs,
    worker_setup,
)
from seg_step import ARCHS, CONFIG, build_segmentor, load_weights, make_weights, model_name

SIDES = ('ours', 'mmseg', 'ort-fp32')
DYNAMIC_SIDE = 'ort-fp32 dynamic'
# --int8 choices: keyword arguments of tinymim.deploy.quantize.quantize
INT8_VARIANTS = {
    'default': {},
    'no-exclusions': dict(exclude=()),
    'attention-in-fp32': dict(exclude=('segmentor.backbone.patch_embed.*', 'segmentor.decode_head.conv_seg',
                                       'scaled_dot_product_attention*')),
    'more-op-types': dict(op_types=('MatMul', 'Conv', 'ConvTranspose', 'Gather', 'Resize', 'Concat', 'Transpose',
                                    'Reshape', 'MaxPool', 'AveragePool')),
    'per-tensor': dict(per_channel=False),
    'dynamic': dict(mode='dynamic'),
}
COLUMNS = ['model', 'side', 'latency ms (batch 1)', 'img/s (batch {})', 'latency ratio (wall)',
           'latency ratio (CPU time)', 'throughput ratio', 'max rel Δ vs ours', 'argmax agrees']
CALIBRATION_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')


def photos(crop: int, names=CALIBRATION_PHOTOS) -> np.ndarray:
    """scikit-image's photographs as an (N, 3, crop, crop) float batch of RGB pixels."""
    import cv2
    from skimage import data
    return np.stack([cv2.resize(getattr(data, n)(), (crop, crop), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                     for n in names]).astype(np.float32)


def pixels(crop: int, batch: int) -> np.ndarray:
    """The benchmark's input: a photograph, then random images (RGB, 0-255)."""
    rng = np.random.default_rng(0)
    rest = rng.integers(0, 256, (max(0, batch - 1), 3, crop, crop)).astype(np.float32)
    return np.concatenate([photos(crop, ('astronaut',)), rest])[:batch]


def preprocessor_cfg(arch: str):
    from mmengine.config import Config
    return Config.fromfile(CONFIG.format(ARCHS[arch]))


# ---------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    spec = worker_setup(args)
    crop, batch, side = spec['crop'], spec['batch'], spec['side']
    x = pixels(crop, max(batch, 1))
    if side.startswith('ort'):
        from tinymim.deploy.runtime import OnnxSegmentor
        model = OnnxSegmentor(spec['onnx'], threads=args.threads)
        inputs = model.prepare(x)

        def run(n):
            return model.run(inputs[:n])
    else:
        model = build_segmentor(spec['arch'], side, 'cpu', crop)
        load_weights(model, side, spec['weights'], backbone_only=False)
        model.eval().test_cfg.mode = 'whole'
        mean, std = (np.asarray(spec[k], np.float32).reshape(1, 3, 1, 1) for k in ('mean', 'std'))
        inputs = torch.from_numpy((x - mean) / std)
        meta = [dict(img_shape=(crop, crop), ori_shape=(crop, crop), pad_shape=(crop, crop),
                     padding_size=[0, 0, 0, 0])] * batch

        def run(n):
            with torch.inference_mode():
                return model.inference(inputs[:n], meta[:n]).numpy()
    single = time_runs(lambda: run(1), 'cpu', args.warmup, args.repeats)
    many = time_runs(lambda: run(batch), 'cpu', args.warmup, args.repeats)
    np.save(spec['output'], run(1)[0])
    emit(dict(seconds=min(t[0] for t in single), cpu_seconds=min(t[1] for t in single),
              batch_seconds=min(t[0] for t in many)))


# ---------------------------------------------------------------- parent
def int8_side(variant: str) -> str:
    return 'ort-int8' if variant == 'default' else f'ort-int8 {variant}'


def prepare_models(arch: str, crop: int, weights: str, tmp: str, variants, dynamic_shapes: bool) -> dict:
    """Export our model (weights from ``weights``) and quantise it; returns ONNX paths per side and
    the preprocessing."""
    from mmseg.registry import MODELS

    from tinymim.deploy import export as ex
    from tinymim.deploy import quantize as qz
    from tinymim.deploy.runtime import OnnxSegmentor
    cfg = preprocessor_cfg(arch)
    model = build_segmentor(arch, 'ours', 'cpu', crop)
    load_weights(model, 'ours', weights, backbone_only=False)
    model.data_preprocessor = MODELS.build(cfg.model.data_preprocessor)
    model.eval()
    fp32 = osp.join(tmp, f'{arch}_fp32.onnx')
    ex.export_onnx(model, cfg, fp32, shape=(crop, crop), dynamic='batch')
    calibration = [OnnxSegmentor(fp32).prepare(p[None]) for p in photos(crop)]
    paths = {'ort-fp32': fp32}
    if dynamic_shapes:  # the cost of a free height and width (tables resized inside the graph)
        paths[DYNAMIC_SIDE] = osp.join(tmp, f'{arch}_fp32_dynamic.onnx')
        ex.export_onnx(model, cfg, paths[DYNAMIC_SIDE], shape=(crop, crop), dynamic='all')
    for variant in variants:
        kwargs = dict(INT8_VARIANTS[variant])
        paths[int8_side(variant)] = osp.join(tmp, f'{arch}_int8_{variant}.onnx')
        qz.quantize(fp32, paths[int8_side(variant)], kwargs.pop('mode', 'static'), calibration, **kwargs)
    pre = ex.preprocessing(model)
    del model, calibration
    gc.collect()  # the workers that follow need the memory
    return dict(onnx=paths, mean=pre['mean'], std=pre['std'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', default='tiny', help=f'comma-separated, of {", ".join(ARCHS)} (default tiny)')
    parser.add_argument('--crop', type=int, default=512, help='input size (default 512)')
    parser.add_argument('--batch', type=int, default=4, help='images per call for the throughput (default 4)')
    parser.add_argument('--int8', default='default',
                        help=f'comma-separated INT8 variants to measure, of {sorted(INT8_VARIANTS)} (default: default)')
    parser.add_argument('--dynamic-shapes', action='store_true',
                        help=f'add a row "{DYNAMIC_SIDE}": the fp32 model exported with --dynamic (any size)')
    add_common_args(parser)
    args = parser.parse_args()
    check_device(args.device)
    if args.device != 'cpu':
        raise SystemExit('benchmarks/deploy.py measures the CPU execution provider; --device must be cpu')
    if args.worker:
        worker(args)
        return
    archs = [a.strip() for a in args.archs.split(',')]
    variants = [v.strip() for v in args.int8.split(',') if v.strip()]
    bad = [a for a in archs if a not in ARCHS] + [v for v in variants if v not in INT8_VARIANTS]
    if bad:
        raise SystemExit(f'unknown arch/INT8 variant {bad}; archs: {sorted(ARCHS)}, variants: {sorted(INT8_VARIANTS)}')
    sides = list(SIDES) + [DYNAMIC_SIDE] * args.dynamic_shapes + [int8_side(v) for v in variants]
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)

    rows, failed = [], 0
    columns = [c.format(args.batch) for c in COLUMNS]
    with scratch_dir() as tmp:
        for arch in archs:
            name = model_name(arch)
            weights = osp.join(tmp, f'{arch}.pth')
            make_weights(arch, args.crop, weights)
            files = prepare_models(arch, args.crop, weights, tmp, variants, args.dynamic_shapes)
            specs = {side: dict(arch=arch, side=side, crop=args.crop, batch=args.batch, weights=weights,
                                onnx=files['onnx'].get(side), mean=files['mean'], std=files['std'],
                                output=osp.join(tmp, f'{arch}_{i}.npy')) for i, side in enumerate(sides)}
            try:
                res = run_sides(__file__, specs, args)
            except WorkerFailed as err:
                rows.append(failed_row([name, 'all'], err, len(columns)))
                failed += 1
                continue
            outs = {side: np.load(spec['output']) for side, spec in specs.items()}
            ref = outs['ours']
            for side in sides:
                runs = res[side]
                diff = float(np.abs(outs[side] - ref).max() / np.abs(ref).max())
                agree = float((outs[side].argmax(0) == ref.argmax(0)).mean())

                def vs_ours(key, runs=runs):  # per round: ours' time over this side's
                    return span(per_round(lambda o, r: ratio(o[key], r[key]), res['ours'], runs))
                rows.append([name, side, span([r['seconds'] * 1000 for r in runs]),
                             span([args.batch / r['batch_seconds'] for r in runs]), vs_ours('seconds'),
                             vs_ours('cpu_seconds'), vs_ours('batch_seconds'), f'{diff:.1e}', f'{agree * 100:.2f}%'])
    print(f'\nUperNet-ViT {args.crop}x{args.crop}, cpu, fp32 unless INT8; ORT = ONNX Runtime; '
          f'{machine_line(args.device, args.threads)}\n')
    print(markdown_table(columns, rows))
    exit_if_failed(failed)


if __name__ == '__main__':
    main()
