import io
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from mmengine.logging import MessageHub, MMLogger
from PIL import Image

from tests.helpers.distill import write_images
from tinymim.datasets import UnlabeledImageDataset
from tinymim.engine import SkippedImagesHook
from tinymim.models.distillers import TwoViewDataPreprocessor

PIPELINE = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCropFlip', size=32, scale=(0.2, 1.0)),
    dict(type='StudentColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackTwoViewInputs'),
]


def dataset(root, **kwargs):
    return UnlabeledImageDataset(data_root=str(root), pipeline=PIPELINE, **kwargs)


def test_layouts_class_folders_flat_and_list(tmp_path):
    second = write_images(_mkdir(tmp_path / 'train' / 'n02'), 2, ext='.JPEG')
    first = write_images(_mkdir(tmp_path / 'train' / 'n01'), 3)
    (tmp_path / 'train' / 'n01' / 'notes.txt').write_text('not an image')
    ds = UnlabeledImageDataset(data_root=str(tmp_path), data_prefix=dict(img_path='train'))
    assert [d['img_path'] for d in ds] == first + second  # sorted, recursive, extensions case-insensitive

    flat = write_images(_mkdir(tmp_path / 'flat'), 2)
    assert [d['img_path'] for d in UnlabeledImageDataset(data_root=str(tmp_path / 'flat'))] == flat

    (tmp_path / 'train.txt').write_text('n02/img_001.JPEG 7\nn01/img_000.png 3\n\n')
    listed = UnlabeledImageDataset(data_root=str(tmp_path / 'train'), ann_file=str(tmp_path / 'train.txt'))
    assert [d['img_path'] for d in listed] == [second[1], first[0]]


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_missing_or_empty_root_fails_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nowhere')):
        UnlabeledImageDataset(data_root=str(tmp_path / 'nowhere'))
    _mkdir(tmp_path / 'empty' / 'n01')
    with pytest.raises(ValueError, match=f'no images found in {tmp_path / "empty"}'):
        UnlabeledImageDataset(data_root=str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError, match='list.txt'):
        UnlabeledImageDataset(data_root=str(tmp_path / 'empty'), ann_file=str(tmp_path / 'list.txt'))


def test_two_views_share_the_crop_and_only_the_student_is_jittered(tmp_path):
    # A left/right split image: the shared crop+flip must put the same halves in both views.
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    img[:, 32:] = (40, 40, 200)
    Image.fromarray(img).save(_mkdir(tmp_path / 'img') / 'split.png')
    ds = dataset(tmp_path / 'img')
    for _ in range(5):
        sample = ds[0]
        teacher, student = sample['inputs']['teacher'], sample['inputs']['student']
        assert teacher.shape == student.shape == (3, 32, 32) and teacher.dtype == torch.uint8
        red_t = teacher[0].float() > teacher[2].float()
        red_s = student[0].float() > student[2].float()
        assert torch.equal(red_t, red_s)  # same geometry
    assert sample['data_samples'].img_path.endswith('split.png')


def test_color_jitter_factors_follow_torchvision(tmp_path):
    Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(_mkdir(tmp_path / 'g') / 'gray.png')
    pipeline = [PIPELINE[0], PIPELINE[1], dict(type='StudentColorJitter', brightness=0.4, contrast=0., saturation=0.),
                PIPELINE[3]]
    ds = UnlabeledImageDataset(data_root=str(tmp_path / 'g'), pipeline=pipeline)
    values = torch.stack([ds[0]['inputs']['student'][0, 0, 0] for _ in range(60)]).float()
    assert values.min() >= 60 and values.max() <= 140  # brightness factor uniform in [0.6, 1.4]
    assert values.max() - values.min() > 30


ODD_IMAGES = [('L', '.png', (40, 40)), ('CMYK', '.jpg', (40, 40)), ('RGBA', '.png', (40, 40)),
              ('RGB', '.jpg', (9, 13)), ('P', '.png', (40, 40))]


@pytest.mark.parametrize('mode,ext,size', ODD_IMAGES)
def test_odd_images_become_rgb_crops(tmp_path, mode, ext, size):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)
    img.save(_mkdir(tmp_path / 'odd') / f'odd{ext}')
    sample = dataset(tmp_path / 'odd')[0]
    assert sample['inputs']['teacher'].shape == (3, 32, 32)
    assert sample['data_samples'].skipped_images == []


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, caplog):
    root = _mkdir(tmp_path / 'imgs')
    write_images(root, 3)
    (root / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
    (tmp_path / 'list.txt').write_text('broken.jpg\ngone.png\nimg_000.png\n')
    ds = dataset(root, ann_file=str(tmp_path / 'list.txt'))
    MMLogger.get_current_instance().addHandler(caplog.handler)
    for idx, name in ((0, 'broken.jpg'), (1, 'gone.png')):
        sample = ds[idx]
        assert sample['inputs']['teacher'].shape == (3, 32, 32)  # a replacement sample
        skipped = sample['data_samples'].skipped_images
        assert skipped and all(p.endswith(('broken.jpg', 'gone.png')) for p in skipped)
        assert skipped[0].endswith(name)
        assert f'skipping image {osp.join(str(root), name)}' in caplog.text

    bad, good = ds[0], ds[2]
    k = len(bad['data_samples'].skipped_images)  # the random replacement may itself be unreadable
    hook, runner = SkippedImagesHook(max_skipped_ratio=0.01), _Runner()
    hook.before_train_iter(runner, 0, default_collate([good] * (100 * k - 1) + [bad]))  # exactly 1 %: allowed
    assert hook.total == k and runner.message_hub.get_scalar('train/skipped_images').current() == k
    with pytest.raises(RuntimeError, match='broken.jpg'):
        hook.before_train_iter(runner, 1, default_collate([good] * (50 * k - 1) + [bad]))  # 2 %


class _Runner:
    """What the hook uses of a Runner: its message hub."""

    def __init__(self):
        self.message_hub = MessageHub.get_instance('test_skipped_images')


def test_preprocessor_normalises_both_views(tmp_path):
    write_images(_mkdir(tmp_path / 'imgs'), 4)
    ds = dataset(tmp_path / 'imgs')
    batch = default_collate([ds[i] for i in range(4)])
    assert batch['inputs']['teacher'].shape == (4, 3, 32, 32)
    out = TwoViewDataPreprocessor()(batch)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    for view in ('teacher', 'student'):
        torch.testing.assert_close(out['inputs'][view], (batch['inputs'][view].float() - mean) / std)
    single = TwoViewDataPreprocessor()(dict(inputs=batch['inputs']['teacher']))
    torch.testing.assert_close(single['inputs'], out['inputs']['teacher'])


def test_png_bytes_roundtrip_is_rgb(tmp_path):
    # Decoding keeps RGB order (OpenCV decodes BGR): a pure red PNG stays red.
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (40, 40, 1))).save(buf, format='PNG')
    (_mkdir(tmp_path / 'red') / 'red.png').write_bytes(buf.getvalue())
    pipeline = [PIPELINE[0], PIPELINE[1], PIPELINE[3]]
    teacher = UnlabeledImageDataset(data_root=str(tmp_path / 'red'), pipeline=pipeline)[0]['inputs']['teacher']
    assert teacher[0].min() == 255 and teacher[1:].max() == 0
