"""Export a trained segmentor to ONNX and check it against PyTorch with ONNX Runtime.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape 512 512] [--dynamic]
        [--output logits|mask] [--input-dtype float32|uint8] [--no-normalize]

The graph takes (N, 3, H, W) RGB pixels (0-255) and holds the data
preprocessor's normalisation (``--no-normalize`` leaves it out), the model
and the resize of the logits to the input size (``--output mask``: their
argmax). After writing the file it runs a random and a real image through
ONNX Runtime and PyTorch and fails when the logits differ by more than
``--tolerance`` (max relative difference). Needs the deploy extra:
``pip install -e .[deploy]``.
"""
import argparse
import os.path as osp
import sys
import time

# Heavy imports (torch, mmseg, onnx) wait until the arguments are parsed, so --help is instant.


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Export a segmentor (config + checkpoint) to ONNX and verify it '
                                                 'with ONNX Runtime')
    parser.add_argument('config', help='the model config')
    parser.add_argument('checkpoint', help='trained segmentor checkpoint (what tools/train.py writes)')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                        help='input height and width (default 512 512; multiples of the patch size)')
    dyn = parser.add_mutually_exclusive_group()
    dyn.add_argument('--dynamic', action='store_true',
                     help='batch, height and width free (position embeddings and relative-bias tables are '
                          'resized inside the graph; slower than a fixed shape)')
    dyn.add_argument('--dynamic-batch', action='store_true', help='only the batch size free')
    parser.add_argument('--batch', type=int, default=1, help='batch size of a fixed-shape model (default 1)')
    parser.add_argument('--output', choices=['logits', 'mask'], default='logits',
                        help='logits (N, classes, H, W) float32, or the argmax mask (N, H, W) int64')
    parser.add_argument('--input-dtype', choices=['float32', 'uint8'], default='float32',
                        help='input pixel type (default float32)')
    parser.add_argument('--no-normalize', action='store_true',
                        help="leave the data preprocessor's normalisation (and channel flip) out of the graph: "
                             'the input is then the normalised image in the network\'s channel order')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument('--verify-image', help='real image for the check (default: scikit-image\'s astronaut)')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest max-relative difference of the logits accepted (default 1e-4)')
    parser.add_argument('--no-verify', action='store_true', help='skip the ONNX Runtime check')
    parser.add_argument('--threads', type=int, help='ONNX Runtime and torch threads for the check')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from tinymim.deploy import export as ex
    from tinymim.deploy.optional import require
    for module in ('onnx', 'onnxscript', 'onnxruntime'):  # all three, before minutes of work
        if module != 'onnxruntime' or not args.no_verify:
            require(module)
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path} does not exist')
    real = None
    if args.verify_image:
        import mmcv
        if not osp.isfile(args.verify_image):
            raise FileNotFoundError(f'--verify-image {args.verify_image} does not exist')
        real = mmcv.imread(args.verify_image, channel_order='rgb')
    if args.threads:
        torch.set_num_threads(args.threads)

    model, cfg = ex.load_segmentor(args.config, args.checkpoint, args.cfg_options)
    dynamic = 'all' if args.dynamic else 'batch' if args.dynamic_batch else None
    start = time.time()
    meta = ex.export_onnx(model, cfg, args.out, shape=args.shape, dynamic=dynamic, batch=args.batch,
                          normalize=not args.no_normalize, output=args.output, input_dtype=args.input_dtype,
                          opset=args.opset, source=dict(config=osp.basename(args.config),
                                                        checkpoint=osp.basename(args.checkpoint)))
    seconds = time.time() - start
    report = ex.file_report(args.out)
    shape = 'N x 3 x H x W (dynamic)' if dynamic == 'all' else \
        f"{'N' if dynamic else args.batch} x 3 x {args.shape[0]} x {args.shape[1]}"
    ex.log(f'wrote {args.out}: {report["size_mib"]:.1f} MiB, opset {report["opset"]}, {report["nodes"]} nodes, '
           f'exported in {seconds:.0f} s; input {shape} {args.input_dtype} RGB'
           f'{", normalised in the graph" if not args.no_normalize else " (normalised by the caller)"}, '
           f'output {args.output}')
    if args.no_verify:
        ex.log('not verified (--no-verify)')
        return dict(meta=meta, report=report, checks=[])
    checks = ex.verify_onnx(model, args.out, ex.verification_images(meta, args.shape, real), args.tolerance,
                            args.threads)
    for row in checks:
        extra = f", {row['pixels_differ']} pixels differ (ties)" if row['compared'] == 'mask' else ''
        ex.log(f"check {row['image']} {row['shape']}: ONNX Runtime vs PyTorch {row['compared']}, max relative "
               f"difference {row['max_rel_diff']:.2e} (limit {args.tolerance:.0e}){extra}: "
               f"{'OK' if row['ok'] else 'FAILED'}")
    failed = [r['image'] for r in checks if not r['ok']]
    if failed:
        sys.exit(f'verification FAILED for {failed}: ONNX Runtime and PyTorch differ by more than '
                 f'{args.tolerance:.0e}; the file is kept at {args.out} for inspection')
    return dict(meta=meta, report=report, checks=checks)


if __name__ == '__main__':
    main()
