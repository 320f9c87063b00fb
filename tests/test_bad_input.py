"""Bad input end to end: each case fails with a message naming the problem, or is handled as documented.

The messages asserted here are the ones listed in docs/reliability.md.
"""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS
from PIL import Image

import tinymim  # noqa: F401
from tests.helpers.distill import TINY_STUDENT, distiller_cfg, write_images, write_teacher
from tests.helpers.reliability import mmengine_log  # noqa: F401  (fixture)
from tinymim.engine import CheckpointLoadError, TinyMIMRunner
from tinymim.engine.checkpoint_files import ensure_writable_dir
from tinymim.engine.config_errors import ConfigKeyError, clear_config_errors
from tinymim.models.vit import VisionTransformer

DISTILL_PIPELINE = [dict(type='LoadImageRGB'), dict(type='RandomResizedCropFlip', size=32),
                    dict(type='StudentColorJitter'), dict(type='PackTwoViewInputs')]
SEG_PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='ValidateSegLabels', num_classes=150),
                dict(type='RandomCrop', crop_size=(32, 32)), dict(type='PackSegInputs')]


@pytest.fixture(autouse=True)
def _mmseg_scope():
    init_default_scope('mmseg')


@pytest.fixture
def images(tmp_path):
    """Good, corrupt, truncated, grayscale, CMYK and too-small images in one folder."""
    folder = tmp_path / 'images'
    folder.mkdir()
    write_images(folder, 2, ext='.jpg')
    rng = np.random.default_rng(0)
    good = (folder / 'img_000.jpg').read_bytes()
    (folder / 'corrupt.jpg').write_bytes(good[:20] + b'\0' * 64)
    assert cv2.imwrite(str(folder / 'full.png'), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    png = (folder / 'full.png').read_bytes()
    (folder / 'truncated.png').write_bytes(png[:len(png) // 2])
    os.remove(folder / 'full.png')
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8), 'L').save(folder / 'gray.png')
    Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8), 'CMYK').save(folder / 'cmyk.jpg')
    assert cv2.imwrite(str(folder / 'small.png'), rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    return folder


def test_distill_images_grayscale_cmyk_small_load_and_corrupt_are_skipped(images, mmengine_log):  # noqa: F811
    dataset = DATASETS.build(dict(type='UnlabeledImageDataset', data_root=str(images), pipeline=DISTILL_PIPELINE))
    skipped = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        for view in sample['inputs'].values():
            assert view.shape == (3, 32, 32)
        skipped.update(sample['data_samples'].metainfo.get('skipped_images', ()))
    assert skipped == {str(images / 'corrupt.jpg'), str(images / 'truncated.png')}
    out = mmengine_log.getvalue()
    assert f'{images / "corrupt.jpg"}: cannot decode (corrupt or not an image)' in out
    assert f'{images / "truncated.png"}: cannot decode (corrupt or not an image)' in out


@pytest.mark.parametrize('name, ok', [('gray.png', True), ('cmyk.jpg', True), ('small.png', True),
                                      ('corrupt.jpg', False), ('truncated.png', False)])
def test_segmentation_image_cases(images, name, ok):
    label = images / 'label.png'
    image = cv2.imread(str(images / 'img_000.jpg')) if name != 'small.png' else np.zeros((8, 10, 3), np.uint8)
    assert cv2.imwrite(str(label), np.ones(image.shape[:2], np.uint8))
    pipeline = Compose(SEG_PIPELINE)
    results = dict(img_path=str(images / name), seg_map_path=str(label), reduce_zero_label=True, seg_fields=[])
    if name in ('gray.png', 'cmyk.jpg'):  # labels must match the image size
        h, w = Image.open(images / name).size[::-1]
        assert cv2.imwrite(str(label), np.ones((h, w), np.uint8))
    if ok:
        assert pipeline(results)['inputs'].shape[0] == 3  # smaller images are padded by the data preprocessor
    else:
        with pytest.raises(Exception, match=f'failed to load image: {images / name}'):
            pipeline(results)


def test_label_values_outside_the_classes_name_the_file(images):
    label = images / 'bad_label.png'
    assert cv2.imwrite(str(label), np.full((40, 48), 200, np.uint8))
    results = dict(img_path=str(images / 'img_000.jpg'), seg_map_path=str(label), reduce_zero_label=True,
                   seg_fields=[])
    with pytest.raises(ValueError, match=f'{label}.*200.*above the 150 classes'):
        Compose(SEG_PIPELINE)(results)


def test_empty_and_missing_data_roots(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(Exception, match=str(tmp_path / 'empty')):
        DATASETS.build(dict(type='UnlabeledImageDataset', data_root=str(tmp_path / 'empty'),
                            pipeline=DISTILL_PIPELINE))
    with pytest.raises(FileNotFoundError, match=f"image root '{tmp_path / 'missing'}/?' does not exist"):
        DATASETS.build(dict(type='UnlabeledImageDataset', data_root=str(tmp_path / 'missing'),
                            pipeline=DISTILL_PIPELINE))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'ade')):
        DATASETS.build(dict(type='TinyMIMADE20KDataset', data_root=str(tmp_path / 'ade'),
                            data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                            pipeline=SEG_PIPELINE))


def test_teacher_checkpoint_problems(tmp_path):
    good = tmp_path / 'teacher.pth'
    write_teacher(good)
    write_teacher(tmp_path / 'wide.pth', arch=dict(embed_dims=96, num_layers=3, num_heads=4))
    write_teacher(tmp_path / 'shallow.pth', arch=dict(embed_dims=64, num_layers=2, num_heads=4))
    (tmp_path / 'notes.pth').write_text('hello')
    cases = [
        ('wide.pth', ValueError, r'wide.pth does not fit the model .*checkpoint width 96 vs model width 64'),
        ('shallow.pth', ValueError, 'shallow.pth has 2 blocks but the model has 3'),
        ('notes.pth', ValueError, r"notes.pth is not a PyTorch checkpoint \(it starts with b'hello'\)"),
        ('missing.pth', FileNotFoundError, 'teacher checkpoint .*missing.pth does not exist'),
    ]
    for name, error, message in cases:
        with pytest.raises(error, match=message):
            MODELS.build(distiller_cfg(tmp_path / name))
    with pytest.raises(ValueError, match='relation_heads=3 does not divide the width embed_dims=64'):
        MODELS.build(distiller_cfg(good, relation_heads=3))


def test_input_not_divisible_by_patch():
    vit = VisionTransformer(arch=TINY_STUDENT, img_size=32)
    with pytest.raises(ValueError, match='input size 30x32 is not divisible by the patch size 16'):
        vit.embed(torch.zeros(1, 3, 30, 32))


def test_config_typo_names_the_key_and_suggests(tmp_path):
    write_teacher(tmp_path / 'teacher.pth')
    with pytest.raises(ConfigKeyError, match=r"Unknown key 'studnet_block' in the config dict of type "
                                             r"'TinyMIMDistiller' \(did you mean 'student_block'\?\)\. Valid keys: "):
        with clear_config_errors():
            MODELS.build(distiller_cfg(tmp_path / 'teacher.pth', studnet_block=1))


def test_resume_from_a_non_checkpoint_names_the_file(tmp_path):
    from tests.helpers.reliability import write_distill_config
    cfg = Config.fromfile(write_distill_config(str(tmp_path)))
    cfg.work_dir = str(tmp_path / 'run')
    (tmp_path / 'notes.pth').write_text('hello')
    runner = TinyMIMRunner.from_cfg(cfg)
    with pytest.raises(CheckpointLoadError, match=f"Cannot read checkpoint {tmp_path / 'notes.pth'} "
                                                  r"\(ValueError: .*is not a PyTorch checkpoint"):
        runner.load_checkpoint(str(tmp_path / 'notes.pth'))


def test_unwritable_work_dir_fails_at_start(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: use a folder on a read-only file system
        target = '/sys/tinymim_work_dir'
        if os.access('/sys', os.W_OK) and osp.isdir('/sys') and not osp.ismount('/sys'):
            pytest.skip('no read-only location to test with')
    else:
        (tmp_path / 'ro').mkdir(mode=0o500)
        target = str(tmp_path / 'ro' / 'work_dir')
    with pytest.raises(PermissionError, match=f'work_dir {target} is not writable .*pass --work-dir'):
        ensure_writable_dir(target)
