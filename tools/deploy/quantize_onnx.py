"""Quantise an exported segmentor to INT8 with ONNX Runtime; report the mIoU change and the speed.

    python tools/deploy/quantize_onnx.py MODEL.onnx OUT.onnx --config CONFIG [--calib-images 8]
    python tools/deploy/quantize_onnx.py MODEL.onnx OUT.onnx --mode dynamic

Static quantisation (the default with ``--config``) calibrates activation
ranges on what the model sees when the config's test pipeline runs over the
first ``--calib-images`` images of its test set (sliding windows included);
without a config (or with ``--mode dynamic``) the activations are quantised
at run time instead. Matrix products and convolutions are quantised
(``--op-types``), except the modules ``--exclude`` names (default: the patch
embedding and the classifier; ``--exclude`` with no pattern quantises them
too). With ``--config``, both models are then evaluated on the test set
(``--eval-images``) and timed. Needs the deploy extra: ``pip install -e .[deploy]``.
"""
import argparse
import os.path as osp

# onnxruntime is imported when it is needed (it names itself when missing).


def parse_args(argv=None):
    from mmengine.config import DictAction

    from tinymim.deploy.quantize import DEFAULT_EXCLUDE, DEFAULT_OP_TYPES
    parser = argparse.ArgumentParser(description='Quantise an exported segmentor to INT8 (ONNX Runtime)')
    parser.add_argument('model', help='the fp32 .onnx file (tools/deploy/export_onnx.py)')
    parser.add_argument('out', help='the INT8 .onnx file to write')
    parser.add_argument('--config', help="the model's config: its test set calibrates and evaluates")
    parser.add_argument('--mode', choices=['static', 'dynamic'],
                        help='static (calibrated; default with --config) or dynamic (default without)')
    parser.add_argument('--calib-images', type=int, default=8, help='test images to calibrate on (default 8)')
    parser.add_argument('--op-types', nargs='+', default=list(DEFAULT_OP_TYPES),
                        help=f'ONNX op types to quantise (default {" ".join(DEFAULT_OP_TYPES)})')
    parser.add_argument('--exclude', nargs='*', default=list(DEFAULT_EXCLUDE), metavar='PATTERN',
                        help='PyTorch module names (fnmatch patterns) to keep in float '
                             f'(default {" ".join(DEFAULT_EXCLUDE)}; none: quantise all)')
    parser.add_argument('--per-tensor', action='store_true', help='one weight scale per tensor, not per channel')
    parser.add_argument('--reduce-range', action='store_true',
                        help='7-bit weights (avoids int16 saturation on CPUs without VNNI)')
    parser.add_argument('--no-eval', action='store_true', help='skip the evaluation of both models')
    parser.add_argument('--eval-images', type=int, help='evaluate on the first N test images (default all)')
    parser.add_argument('--threads', type=int, help='ONNX Runtime threads (default: all physical cores)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs (e.g. the data root)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.logging import print_log

    from tinymim.deploy import quantize as qz
    from tinymim.deploy.export import load_config
    from tinymim.deploy.runtime import OnnxSegmentor, latency

    mode = args.mode or ('static' if args.config else 'dynamic')
    if mode == 'static' and not args.config:
        raise ValueError('--mode static calibrates on a data set: give --config (or use --mode dynamic)')
    if osp.abspath(args.model) == osp.abspath(args.out):
        raise ValueError('OUT must differ from MODEL')
    fp32 = OnnxSegmentor(args.model, threads=args.threads)  # names a missing or non-ONNX file first
    cfg = load_config(args.config, args.cfg_options) if args.config else None
    calibration = None
    if mode == 'static':
        calibration = qz.calibration_inputs(cfg, args.model, args.calib_images, args.threads)
        print_log(f'calibration: {len(calibration)} inputs from {args.calib_images} test images', logger='current')
    done = qz.quantize(args.model, args.out, mode, calibration, op_types=args.op_types, exclude=args.exclude,
                       per_channel=not args.per_tensor, reduce_range=args.reduce_range)
    size = {p: osp.getsize(p) / 2**20 for p in (args.model, args.out)}
    print_log(f'wrote {args.out} ({mode}): {done["quantized"]} {"/".join(args.op_types)} nodes in INT8, '
              f'{done["excluded"]} kept in float; {size[args.model]:.1f} -> {size[args.out]:.1f} MiB', logger='current')
    int8 = OnnxSegmentor(args.out, threads=args.threads)
    shape = fp32.fixed_size or tuple(cfg.model.test_cfg.get('crop_size', (512, 512)) if cfg else (512, 512))
    speed = {name: latency(m, shape) for name, m in (('fp32', fp32), ('int8', int8))}
    print_log(f'latency at {shape[0]}x{shape[1]}: fp32 {speed["fp32"] * 1000:.0f} ms, int8 '
              f'{speed["int8"] * 1000:.0f} ms ({speed["fp32"] / speed["int8"]:.2f}x)', logger='current')
    result = dict(mode=mode, latency=speed, **done)
    if cfg is not None and not args.no_eval:
        for name, path in (('fp32', args.model), ('int8', args.out)):
            result[name] = qz.evaluate(qz.build_onnx_segmentor(cfg, path, args.threads), cfg, args.eval_images)
        change = result['int8']['metrics']['mIoU'] - result['fp32']['metrics']['mIoU']
        print_log(f"mIoU on {result['fp32']['images']} test images: fp32 {result['fp32']['metrics']['mIoU']:.2f}, "
                  f"int8 {result['int8']['metrics']['mIoU']:.2f} ({change:+.2f} points)", logger='current')
    return result


if __name__ == '__main__':
    main()
