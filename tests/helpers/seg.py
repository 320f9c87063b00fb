"""Shared pieces of the segmentation tests: tiny UperNets, configs, generated data."""
import os.path as osp
import subprocess
import sys

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from tests.helpers import ROOT

UPERNET_DIR = osp.join(ROOT, 'mmseg_configs', 'upernet')
SYNTHETIC_CONFIG = osp.join(UPERNET_DIR, 'upernet_tinymim-vit-t_1xb8-400_ade20k-synthetic-128x128.py')
TINY_ARCH = dict(embed_dims=64, num_layers=4, num_heads=2)


def config_path(size: str, init: str = 'tinymim') -> str:
    return osp.join(UPERNET_DIR, f'upernet_{init}-vit-{size}_8xb2-160k_ade20k-512x512.py')


def build_segmentor(cfg_model: dict):
    """Build a segmentor config in mmseg's scope, SyncBN reverted for the CPU."""
    from mmseg.registry import MODELS

    import tinymim  # noqa: F401  (registers modules)
    init_default_scope('mmseg')
    return revert_sync_batchnorm(MODELS.build(cfg_model))


def tiny_model_cfg(img_size: int = 64, **overrides) -> dict:
    """The ViT-T recipe's model (light decoder) with a 4-block, 64-wide ViT and thin heads."""
    cfg = Config.fromfile(config_path('t-light'))
    cfg.model.backbone.arch = dict(TINY_ARCH)
    cfg.merge_from_dict({'model.pretrained': None, 'model.backbone.img_size': img_size,
                         'model.backbone.out_indices': [0, 1, 2, 3],
                         'model.decode_head.channels': 32, 'model.auxiliary_head.channels': 16,
                         'model.data_preprocessor.size': (img_size, img_size), **overrides})
    return cfg.model


TINY_RUN_CONFIG = """
_base_ = '{base}'
crop_size = (64, 64)
{extra}
model = dict(
    data_preprocessor=dict(size=crop_size),
    {model})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='ValidateSegLabels', num_classes=150),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=2, num_workers=0,  # persistent_workers (mmseg's True) is turned off
                        dataset=dict(data_root='{data_root}', pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, dataset=dict(data_root='{data_root}'))
test_dataloader = val_dataloader
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end={iters})]
train_cfg = dict(max_iters={iters}, val_interval={iters})
default_hooks = dict(logger=dict(interval=2), checkpoint=dict(interval={iters}))
"""
TINY_SYNTHETIC_MODEL = """backbone=dict(arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=2),
                  img_size=crop_size, out_indices=[0, 1, 2, 3]),
    decode_head=dict(channels=32),
    auxiliary_head=dict(channels=16)"""


def write_tiny_config(path: str, data_root: str, base: str = SYNTHETIC_CONFIG, model: str = TINY_SYNTHETIC_MODEL,
                      iters: int = 4, extra: str = '') -> str:
    """A config inheriting ``base`` (default: the synthetic-set config) on a generated data
    set: a tiny ``model``, 64-px crops, ``iters`` iterations, then validation."""
    with open(path, 'w') as f:
        f.write(TINY_RUN_CONFIG.format(base=base, data_root=data_root, model=model, iters=iters, extra=extra))
    return str(path)


def set_test_resize(cfg: Config, scale) -> Config:
    """Resize test images to ``scale`` instead of the config's (2048, 512): in ``test_pipeline``
    (what mmseg.apis reads) and in the val/test data loaders."""
    pipelines = [cfg.test_pipeline] + [cfg[k].dataset.pipeline for k in ('val_dataloader', 'test_dataloader')
                                       if cfg.get(k) and 'pipeline' in cfg[k].dataset]
    for pipeline in pipelines:
        for step in pipeline:
            if step['type'] == 'Resize':
                step['scale'] = scale
    return cfg


def run_tool(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command-line tool as users do; fail the test with its output on error."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc
