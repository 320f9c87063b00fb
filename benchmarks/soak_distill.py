"""Soak test: a 2,000-iteration tiny distillation on CPU, recording the process RSS.

Not part of CI. Runs the real distillation config (ViT-B -> ViT-S recipe) with tiny
ViTs on 32-px random images through TinyMIMRunner, in this process (num_workers=0,
so data loading memory counts too), checkpointing every 50 epochs. Prints RSS every
``--every`` iterations and the growth after warm-up.

    python benchmarks/soak_distill.py [--iters 2000] [--every 100] [--warmup 200]
"""
import argparse
import os
import os.path as osp
import tempfile
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

import tinymim  # noqa: F401  (registers modules)
from tinymim.engine import TinyMIMRunner
from tinymim.models.vit import VisionTransformer

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'mmseg_configs/distill/tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py')
TEACHER = dict(embed_dims=64, num_layers=3, num_heads=4)
STUDENT = dict(embed_dims=32, num_layers=2, num_heads=2)


def rss_mib() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


class RSSRecorderHook(Hook):
    priority = 'LOWEST'

    def __init__(self, every: int):
        self.every = every
        self.samples = []
        self.start = time.time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if (runner.iter + 1) % self.every == 0:
            self.samples.append((runner.iter + 1, rss_mib(), time.time() - self.start))


def make_inputs(folder: str, num_images: int) -> str:
    torch.manual_seed(0)
    teacher = osp.join(folder, 'teacher.pth')
    torch.save({'model': VisionTransformer(arch=TEACHER, img_size=32).state_dict()}, teacher)
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(folder, 'images'))
    for i in range(num_images):
        cv2.imwrite(osp.join(folder, 'images', f'{i:03d}.jpg'), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return teacher


def build_cfg(folder: str, teacher: str, iters: int, batch_size: int, num_images: int) -> Config:
    epochs = iters * batch_size // num_images
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(
        work_dir=osp.join(folder, 'work_dir'),
        randomness=dict(seed=0),
        model=dict(teacher=dict(arch=dict(TEACHER, _delete_=True), img_size=32, checkpoint=teacher),
                   student=dict(arch=dict(STUDENT, _delete_=True), img_size=32), teacher_block=None),
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False, pin_memory=False,
                              dataset=dict(data_root=osp.join(folder, 'images'), data_prefix=dict(img_path=''))),
        auto_scale_lr=dict(enable=False),
        train_cfg=dict(max_epochs=epochs),
        default_hooks=dict(logger=dict(interval=500), checkpoint=dict(interval=50, max_keep_ckpts=2)),
    ))
    cfg.train_dataloader.dataset.pipeline[1].size = 32
    cfg.param_scheduler[0].end = 5
    cfg.param_scheduler[1].update(begin=5, end=epochs, T_max=epochs - 5)
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--every', type=int, default=100, help='record RSS every N iterations')
    parser.add_argument('--warmup', type=int, default=200, help='iterations before growth is measured')
    parser.add_argument('--batch-size', type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    num_images = 64
    with tempfile.TemporaryDirectory() as folder:
        teacher = make_inputs(folder, num_images)
        cfg = build_cfg(folder, teacher, args.iters, args.batch_size, num_images)
        recorder = RSSRecorderHook(args.every)
        runner = TinyMIMRunner.from_cfg(cfg)
        runner.register_hook(recorder)
        runner.train()
    print(f'\n{"iteration":>9} | {"RSS MiB":>8} | {"seconds":>7}')
    print(f'{"-" * 9}-+-{"-" * 8}-+-{"-" * 7}')
    for it, rss, secs in recorder.samples:
        print(f'{it:>9} | {rss:>8.1f} | {secs:>7.1f}')
    after_warmup = [rss for it, rss, _ in recorder.samples if it >= args.warmup]
    growth = after_warmup[-1] - after_warmup[0]
    print(f'\nRSS after warm-up (iteration {args.warmup}): {after_warmup[0]:.1f} MiB; at iteration '
          f'{recorder.samples[-1][0]}: {after_warmup[-1]:.1f} MiB; growth {growth:+.1f} MiB; '
          f'range {min(after_warmup):.1f}-{max(after_warmup):.1f} MiB')


if __name__ == '__main__':
    main()
