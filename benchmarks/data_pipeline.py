"""Two-view distillation pipeline, images/s per data-loader worker.

* ours: the training pipeline of ``mmseg_configs/_base_/datasets/
  imagenet_unlabeled.py`` (``LoadImageRGB`` -> ``RandomResizedCropFlip`` ->
  ``StudentColorJitter`` -> ``PackTwoViewInputs``): OpenCV decode, uint8
  tensor crop and resize, the three jitter blends in one float pass, two
  uint8 views; normalisation happens later, batched, in the model's data
  preprocessor (on the GPU in training).
* ours + normalising in the worker: the same, then that data preprocessor
  (``TwoViewDataPreprocessor``) on the two views in the worker, which then
  hands over float views as the reference does: the like-for-like row.
* reference: the reference's torchvision/PIL pipeline with the same
  augmentations: PIL decode, ``RandomResizedCrop(224, scale=(0.2, 1.0),
  bicubic)``, horizontal flip, ``ColorJitter(0.4, 0.4, 0.4)`` on the
  student view, ``ToTensor`` + ``Normalize`` on both views in the worker.

Both draw the crop with ``RandomResizedCrop.get_params``, resize bicubic with
antialiasing and apply jitter factors uniform in [0.6, 1.4] in random order.
Each side runs in a fresh single-threaded process (torch and OpenCV set to
one thread, as in a data-loader worker) over the same generated JPEGs
(``--size``, quality 90, smooth content with noise, like photos).

Example: ``python benchmarks/data_pipeline.py --images 64 --passes 3``.
"""
import argparse
import os.path as osp
import time

import numpy as np
import torch
from common import (
    DEFAULT_ROUNDS,
    check_device,
    emit,
    machine_line,
    markdown_table,
    per_round,
    ratio,
    run_sides,
    scratch_dir,
    span,
    worker_setup,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(folder: str, count: int, size, seed: int = 0):
    """``count`` photo-like JPEGs (smooth colour fields plus noise) of ``size`` (w, h)."""
    import cv2
    rng = np.random.default_rng(seed)
    w, h = size
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img += rng.integers(-20, 21, img.shape, dtype=np.int16)
        path = osp.join(folder, f'{i:05d}.jpg')
        cv2.imwrite(path, np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def ours_pipeline(crop: int):
    from mmcv.transforms import Compose
    from mmengine.config import Config

    import tinymim  # noqa: F401  (registers the transforms)
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(root, 'mmseg_configs/_base_/datasets/imagenet_unlabeled.py'))
    steps = [dict(t, size=crop) if t['type'] == 'RandomResizedCropFlip' else t for t in cfg.train_pipeline]
    from mmseg.registry import TRANSFORMS
    pipeline = Compose([TRANSFORMS.build(t) for t in steps])
    return lambda path: pipeline(dict(img_path=path))


def normalised(pipeline):
    """``pipeline`` followed by the model's data preprocessor, in the worker."""
    from tinymim.models.distillers.data_preprocessor import TwoViewDataPreprocessor
    preprocess = TwoViewDataPreprocessor()

    def run(path):
        views = pipeline(path)['inputs']
        return preprocess(dict(inputs={name: [view] for name, view in views.items()}))['inputs']
    return run


def reference_pipeline(crop: int):
    from PIL import Image
    from torchvision import transforms as T
    shared = T.Compose([T.RandomResizedCrop(crop, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                        T.RandomHorizontalFlip()])
    jitter = T.ColorJitter(0.4, 0.4, 0.4)
    finish = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])

    def run(path):
        with open(path, 'rb') as f:
            img = shared(Image.open(f).convert('RGB'))
        return dict(teacher=finish(img), student=finish(jitter(img)))
    return run


def worker(args):
    spec = worker_setup(args)
    import cv2
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    impl = spec['impl']
    run = (reference_pipeline if impl == 'reference' else ours_pipeline)(spec['crop'])
    if impl == 'ours_normalised':
        run = normalised(run)
    paths = spec['paths']
    for p in paths[:max(1, len(paths) // 8)]:  # warm-up: imports, first-call allocations
        run(p)
    best = None
    for _ in range(spec['passes']):
        wall, cpu = time.perf_counter(), time.process_time()
        for p in paths:
            run(p)
        times = (time.perf_counter() - wall, time.process_time() - cpu)
        best = times if best is None else tuple(min(a, b) for a, b in zip(best, times))
    emit(dict(seconds=best[0], cpu_seconds=best[1], images=len(paths)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=64, help='generated JPEGs per pass')
    parser.add_argument('--size', default='500x375', help='JPEG size WxH (ImageNet-like)')
    parser.add_argument('--crop', type=int, default=224, help='output size of the views')
    parser.add_argument('--passes', type=int, default=3, help='timed passes over the images (best is kept)')
    parser.add_argument('--rounds', type=int, default=DEFAULT_ROUNDS,
                        help='fresh worker processes per pipeline, alternating; every figure is the range over '
                             f'the rounds (default {DEFAULT_ROUNDS})')
    parser.add_argument('--device', default='cpu', help=argparse.SUPPRESS)  # data workers are CPU-only
    parser.add_argument('--warmup', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--repeats', type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_device(args.device)
    if args.worker:
        worker(args)
        return
    try:
        size = tuple(int(v) for v in args.size.lower().split('x'))
        assert len(size) == 2
    except (ValueError, AssertionError):
        raise SystemExit(f'--size must look like 500x375, got {args.size!r}')
    with scratch_dir() as tmp:
        paths = make_jpegs(tmp, args.images, size)
        res = run_sides(__file__, {impl: dict(impl=impl, paths=paths, crop=args.crop, passes=args.passes)
                                   for impl in ('ours', 'ours_normalised', 'reference')}, args)
    ips = {k: [r['images'] / r['seconds'] for r in runs] for k, runs in res.items()}
    ipc = {k: [r['images'] / r['cpu_seconds'] for r in runs] for k, runs in res.items()}
    print(f'\nTwo-view pipeline, one worker (1 thread), {args.images} JPEGs {size[0]}x{size[1]} -> two '
          f'{args.crop}px views; each figure: min–max over {args.rounds} alternating round(s); '
          f'{machine_line("cpu", threads=1)}\n')
    names = {'ours': 'ours (OpenCV + uint8 tensor ops; normalised later, batched)',
             'ours_normalised': 'ours + normalising in the worker (like for like)',
             'reference': 'reference (PIL + torchvision, ToTensor + Normalize)'}
    print(markdown_table(['pipeline', 'img/s (wall)', 'img per CPU-second', 'ratio (wall)', 'ratio (CPU time)'], [
        [name, span(ips[impl]), span(ipc[impl]), span(per_round(ratio, ips[impl], ips['reference'])),
         span(per_round(ratio, ipc[impl], ipc['reference']))] for impl, name in names.items()]))


if __name__ == '__main__':
    main()
