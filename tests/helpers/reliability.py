"""Tiny real configs and a subprocess runner for the reliability tests."""
import io
import json
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.distill import TINY_STUDENT, TINY_TEACHER, write_images, write_teacher

DISTILL_CONFIG = osp.join(ROOT, 'mmseg_configs/distill/tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py')
SEG_CONFIG = osp.join(ROOT, 'mmseg_configs/upernet/upernet_tinymim-vit-t_1xb8-400_ade20k-synthetic-128x128.py')
TINY_SEG_ARCH = dict(embed_dims=32, num_layers=4, num_heads=2)

COMMON = """
custom_imports = dict(imports=['tinymim', 'tests.helpers.training_probe'], allow_failed_imports=False)
randomness = dict(seed=0)
custom_hooks = [dict(type='TrainingProbeHook')]
env_cfg = dict(cudnn_benchmark=False)
"""


@pytest.fixture
def mmengine_log():
    """What mmengine's current logger prints during a test (its own handler may hold a stale stdout)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def _arch(arch: dict) -> str:
    """An arch dict replacing the base config's arch name."""
    return repr(dict(arch, _delete_=True))


def write_distill_config(tmp, *, num_images=24, batch_size=4, max_epochs=2, ckpt_every_iters=2,
                         num_workers=1, drop_path_rate=0.1, extra='') -> str:
    """The real ViT-B -> ViT-S config with tiny ViTs on 32-px images: 6 iterations/epoch."""
    teacher = osp.join(tmp, 'teacher.pth')
    if not osp.exists(teacher):
        os.makedirs(tmp, exist_ok=True)
        write_teacher(teacher)
        os.makedirs(osp.join(tmp, 'images'))
        write_images(osp.join(tmp, 'images'), num_images)
    text = f"""_base_ = {DISTILL_CONFIG!r}
{COMMON}
model = dict(teacher=dict(arch={_arch(TINY_TEACHER)}, img_size=32, checkpoint={teacher!r}),
             student=dict(arch={_arch(TINY_STUDENT)}, img_size=32, drop_path_rate={drop_path_rate}), teacher_block=None)
train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCropFlip', size=32, scale=(0.2, 1.0), interpolation='bicubic', flip_prob=0.5),
    dict(type='StudentColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackTwoViewInputs'),
]
train_dataloader = dict(batch_size={batch_size}, num_workers={num_workers}, persistent_workers={num_workers > 0},
                        pin_memory=False,
                        dataset=dict(data_root={osp.join(tmp, 'images')!r}, data_prefix=dict(img_path=''),
                                     pipeline=train_pipeline))
auto_scale_lr = dict(enable=False)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_epochs = {max_epochs}
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', T_max={max_epochs} - 1, eta_min=0.0, by_epoch=True, begin=1,
                        end={max_epochs}, convert_to_iter_based=True)]
train_cfg = dict(max_epochs={max_epochs})
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={ckpt_every_iters}, max_keep_ckpts=2, save_last=False))
{extra}
"""
    path = osp.join(tmp, 'tiny_distill.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def write_seg_config(tmp, *, max_iters=6, batch_size=2, ckpt_every_iters=2, num_workers=1, extra='') -> str:
    """The synthetic-ADE20K UperNet config with a 4-block, 32-wide ViT on 32-px crops, no validation."""
    data = osp.join(tmp, 'ade')
    if not osp.exists(data):
        from tinymim.datasets.synthetic_ade import make_synthetic_ade20k
        make_synthetic_ade20k(data, num_train=12, num_val=2, size=48)
    text = f"""_base_ = {SEG_CONFIG!r}
{COMMON}
crop_size = (32, 32)
model = dict(data_preprocessor=dict(size=crop_size),
             backbone=dict(arch={_arch(TINY_SEG_ARCH)}, img_size=crop_size, out_indices=[0, 1, 2, 3]),
             decode_head=dict(channels=16), auxiliary_head=dict(channels=16))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(64, 32), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size={batch_size}, num_workers={num_workers}, persistent_workers={num_workers > 0},
                        dataset=dict(data_root={osp.join(data, 'ADEChallengeData2016')!r}, pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
                   dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=2, end={max_iters})]
train_cfg = dict(max_iters={max_iters}, val_interval=10**6)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={ckpt_every_iters}, max_keep_ckpts=2),
                     visualization=dict(draw=False))
{extra}
"""
    path = osp.join(tmp, 'tiny_seg.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def run_tool(args, probe_dir=None, env=None, timeout=300, launcher=None):
    """Run ``tools/train.py ARGS`` (or a shell tool) in a fresh process; returns CompletedProcess."""
    # The checkout first (``tests.helpers.training_probe``; it also shadows mmseg's wheel, which ships a
    # top-level ``tests``); prepended, not replaced: an environment may provide packages through PYTHONPATH.
    python_path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    full_env = dict(os.environ, PYTHONPATH=python_path, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    for key in list(full_env):
        if key.startswith('TINYMIM_PROBE'):
            del full_env[key]
    if probe_dir is not None:
        os.makedirs(probe_dir, exist_ok=True)
        full_env['TINYMIM_PROBE_DIR'] = str(probe_dir)
    full_env.update(env or {})
    cmd = launcher or [sys.executable, osp.join(ROOT, 'tools/train.py')]
    return subprocess.run(cmd + list(args), env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def read_losses(probe_dir, rank=0) -> dict:
    """{iteration: {loss name: float}} of one rank; a later record of an iteration wins."""
    losses = {}
    path = osp.join(probe_dir, f'losses_rank{rank}.jsonl')
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            losses[record.pop('iter')] = {k: float(v) for k, v in record.items()}
    return losses
