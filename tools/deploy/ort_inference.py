"""Segment images with an exported ONNX model in ONNX Runtime; write coloured masks.

    python tools/deploy/ort_inference.py MODEL.onnx IMAGES... --out DIR [--opacity 0.5]

IMAGES are files or folders. Each prediction is drawn by mmseg's
``SegLocalVisualizer`` with the palette of the data set the model was
exported for (stored in the ONNX file), as ``tools/test.py --show-dir``
draws them: ``DIR/<image name>.png``, the coloured mask alone by default, or
blended over the photograph with ``--opacity`` below 1. ``--save-labels``
also writes the class indices as a grey PNG. A fixed-shape model takes
images of its own size only; a dynamic one (``--dynamic`` at export) takes
any size. Needs the deploy extra: ``pip install -e .[deploy]``.
"""
import argparse
import os
import os.path as osp
import time

# Heavy imports (mmseg, onnxruntime) wait until the arguments are parsed, so --help is instant.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Segment images with an exported ONNX model in ONNX Runtime')
    parser.add_argument('model', help='the .onnx file (tools/deploy/export_onnx.py)')
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--out', required=True, help='folder for the coloured masks')
    parser.add_argument('--opacity', type=float, default=1.0,
                        help='mask opacity over the image: 1 = the mask alone (default), 0.5 = half blended')
    parser.add_argument('--save-labels', action='store_true', help='also write DIR/<name>_labels.png (class ids)')
    parser.add_argument('--threads', type=int, help='ONNX Runtime threads (default: all physical cores)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.opacity <= 1:
        raise ValueError(f'--opacity must be within [0, 1], got {args.opacity}')
    import mmcv
    import numpy as np
    from mmengine.logging import print_log
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer

    from tinymim.deploy.runtime import OnnxSegmentor, image_paths

    model = OnnxSegmentor(args.model, threads=args.threads)
    paths = image_paths(args.images)
    os.makedirs(args.out, exist_ok=True)
    visualizer = SegLocalVisualizer(name=f'ort_inference_{time.time_ns()}', alpha=args.opacity)
    visualizer.dataset_meta = dict(classes=model.classes(), palette=model.palette())
    written = []
    for path in paths:
        image = mmcv.imread(path, channel_order='rgb')
        if image is None:
            raise ValueError(f'{path} could not be read as an image')
        start = time.time()
        mask = model.predict(image, what=f'image {path}')
        seconds = time.time() - start
        sample = SegDataSample(pred_sem_seg=PixelData(data=mask[None]))
        stem = osp.splitext(osp.basename(path))[0]
        out_file = osp.join(args.out, f'{stem}.png')
        visualizer.add_datasample(stem, image, sample, draw_gt=False, with_labels=False, out_file=out_file)
        if args.save_labels:
            mmcv.imwrite(mask.astype('uint8' if model.num_classes <= 256 else 'uint16'),
                         osp.join(args.out, f'{stem}_labels.png'))
        classes = np.unique(mask)
        print_log(f'{path}: {image.shape[1]}x{image.shape[0]}, {seconds * 1000:.0f} ms, {len(classes)} classes '
                  f'-> {out_file}', logger='current')
        written.append(out_file)
    return written


if __name__ == '__main__':
    main()
