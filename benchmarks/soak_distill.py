"""Soak test: a long distillation run in one process on CPU, recording the process RSS.

Not part of CI. Runs a real distillation config through TinyMIMRunner, in this
process (num_workers=0, so data loading memory counts too), on random images,
checkpointing several times. Prints RSS every ``--every`` iterations and the
growth after warm-up. Two sizes (``--preset``):

* ``toy`` (default): the ViT-B -> ViT-S config with tiny ViTs (teacher 64 wide
  x 3 blocks, student 32 x 2) on 32-px views, 2,000 iterations, a checkpoint
  every 50 epochs; about a minute.
* ``vit-t-224``: the ViT-S -> ViT-T config as it is (a random ViT-S teacher,
  ViT-T student, 224-px views, relations in 12 heads), 300 iterations, a
  checkpoint every 6 epochs (48 iterations); a long run (minutes per epoch
  of 8 iterations on a busy 2-core CPU).

    python benchmarks/soak_distill.py [--preset toy|vit-t-224] [--iters N] [--every N] [--warmup N]
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
CONFIGS = osp.join(ROOT, 'mmseg_configs/distill')
PRESETS = {
    # the real config with tiny ViTs on 32-px views
    'toy': dict(config='tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py', teacher=dict(embed_dims=64, num_layers=3,
                num_heads=4), student=dict(embed_dims=32, num_layers=2, num_heads=2), img_size=32,
                image_size=(48, 40), iters=2000, every=100, warmup=200, checkpoint_epochs=50),
    # the ViT-T step of the sequential chain at its real size
    'vit-t-224': dict(config='tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py', teacher='small', student=None,
                      img_size=224, image_size=(320, 240), iters=300, every=25, warmup=50, checkpoint_epochs=6),
}


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


def make_inputs(folder: str, preset: dict, num_images: int) -> str:
    """A random teacher of the preset's arch ({'model': timm keys}, as MAE files) and random JPEGs."""
    torch.manual_seed(0)
    teacher = osp.join(folder, 'teacher.pth')
    torch.save({'model': VisionTransformer(arch=preset['teacher'], img_size=preset['img_size']).state_dict()}, teacher)
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(folder, 'images'))
    w, h = preset['image_size']
    for i in range(num_images):
        cv2.imwrite(osp.join(folder, 'images', f'{i:03d}.jpg'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return teacher


def build_cfg(folder: str, preset: dict, teacher: str, iters: int, batch_size: int, num_images: int) -> Config:
    epochs = max(6, iters * batch_size // num_images)
    cfg = Config.fromfile(osp.join(CONFIGS, preset['config']))
    model = dict(teacher=dict(checkpoint=teacher, img_size=preset['img_size']),
                 student=dict(img_size=preset['img_size']))
    if preset['student'] is not None:  # tiny ViTs instead of the config's
        model = dict(teacher=dict(model['teacher'], arch=dict(preset['teacher'], _delete_=True)),
                     student=dict(model['student'], arch=dict(preset['student'], _delete_=True)), teacher_block=None)
    cfg.merge_from_dict(dict(
        work_dir=osp.join(folder, 'work_dir'),
        randomness=dict(seed=0),
        model=model,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False, pin_memory=False,
                              dataset=dict(data_root=osp.join(folder, 'images'), data_prefix=dict(img_path=''))),
        auto_scale_lr=dict(enable=False),
        train_cfg=dict(max_epochs=epochs),
        default_hooks=dict(logger=dict(interval=500),
                           checkpoint=dict(interval=preset['checkpoint_epochs'], max_keep_ckpts=2)),
    ))
    cfg.train_dataloader.dataset.pipeline[1].size = preset['img_size']
    cfg.param_scheduler[0].end = 5
    cfg.param_scheduler[1].update(begin=5, end=epochs, T_max=epochs - 5)
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='toy',
                        help='toy: tiny ViTs on 32-px views; vit-t-224: the ViT-S -> ViT-T config at 224 px')
    parser.add_argument('--iters', type=int, default=None, help='default: the preset\'s (2000 toy, 300 vit-t-224)')
    parser.add_argument('--every', type=int, default=None, help='record RSS every N iterations (100 / 25)')
    parser.add_argument('--warmup', type=int, default=None, help='iterations before growth is measured (200 / 50)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    iters, every, warmup = (preset[k] if getattr(args, k) is None else getattr(args, k)
                            for k in ('iters', 'every', 'warmup'))
    torch.set_num_threads(args.threads)
    num_images = 64
    with tempfile.TemporaryDirectory() as folder:
        teacher = make_inputs(folder, preset, num_images)
        cfg = build_cfg(folder, preset, teacher, iters, args.batch_size, num_images)
        recorder = RSSRecorderHook(every)
        runner = TinyMIMRunner.from_cfg(cfg)
        runner.register_hook(recorder)
        runner.train()
    print(f'\n{args.preset}: {runner.iter} iterations, batch {args.batch_size}, {args.threads} thread(s)\n')
    print(f'{"iteration":>9} | {"RSS MiB":>8} | {"seconds":>7}')
    print(f'{"-" * 9}-+-{"-" * 8}-+-{"-" * 7}')
    for it, rss, secs in recorder.samples:
        print(f'{it:>9} | {rss:>8.1f} | {secs:>7.1f}')
    after_warmup = [rss for it, rss, _ in recorder.samples if it >= warmup]
    if not after_warmup:
        raise SystemExit(f'no RSS sample at or after iteration {warmup}: run more --iters or lower --warmup')
    growth = after_warmup[-1] - after_warmup[0]
    print(f'\nRSS after warm-up (iteration {warmup}): {after_warmup[0]:.1f} MiB; at iteration '
          f'{recorder.samples[-1][0]}: {after_warmup[-1]:.1f} MiB; growth {growth:+.1f} MiB; '
          f'range {min(after_warmup):.1f}-{max(after_warmup):.1f} MiB')


if __name__ == '__main__':
    main()
