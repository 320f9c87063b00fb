"""A small, learnable data set in the ADE20K layout, for tests and the demo.

Each image is a background region plus a few shapes (rectangles, ellipses,
triangles). Every region has one class, drawn with that class's colour and
texture (stripes of a given orientation and period, checkers, dots, noise),
so a segmentor can learn the classes from a few hundred iterations. A thin
border around each shape is labelled 0 (ignored), as ADE20K leaves object
boundaries unlabelled. Labels are ADE20K ids 1..150 stored in PNGs, with
``reduce_zero_label`` in mind: 0 is ignore.

The output is fully determined by ``seed``: image ``i`` of a split uses the
random generator seeded with ``(seed, split, i)``.
"""
import colorsys
import os
import os.path as osp
from typing import Dict, List, Sequence

import cv2
import numpy as np
from mmengine.logging import print_log

# ADE20K ids of the classes used (1-based, as in the label PNGs): wall,
# building, sky, floor, tree, road, grass, person, mountain, car, water, sea,
# fence, rock, sand, river. A handful is enough to be learnable on a CPU.
DEFAULT_CLASS_IDS = (1, 2, 3, 4, 5, 7, 10, 13, 17, 21, 22, 27, 33, 35, 47, 61)
TEXTURES = ('hstripes', 'vstripes', 'diagonal', 'checker', 'dots', 'noise')
SPLITS = {'train': 'training', 'val': 'validation'}


def class_appearance(num_classes: int) -> List[Dict]:
    """Colour (RGB, 0-255) and texture of each class index 0..num_classes-1.

    Hues are spread evenly; the texture cycles through ``TEXTURES`` with a
    period that grows every full cycle, so neighbours in hue also differ in
    texture.
    """
    looks = []
    for i in range(num_classes):
        hue = (i * 0.618034) % 1.0  # golden-ratio steps keep neighbouring ids apart in hue
        rgb = colorsys.hsv_to_rgb(hue, 0.55 + 0.3 * (i % 2), 0.55 + 0.35 * ((i // 2) % 2))
        looks.append(dict(colour=np.array(rgb) * 255, texture=TEXTURES[i % len(TEXTURES)],
                          period=4 + 3 * (i // len(TEXTURES))))
    return looks


def texture_pattern(texture: str, period: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) pattern in [-1, 1] with a random phase."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    yy += rng.uniform(0, period)
    xx += rng.uniform(0, period)
    if texture == 'hstripes':
        return np.sign(np.sin(2 * np.pi * yy / period))
    if texture == 'vstripes':
        return np.sign(np.sin(2 * np.pi * xx / period))
    if texture == 'diagonal':
        return np.sign(np.sin(2 * np.pi * (xx + yy) / (period * 1.4)))
    if texture == 'checker':
        return np.where((xx // period + yy // period) % 2 == 0, 1., -1.)
    if texture == 'dots':
        cell = period * 1.5
        d = np.hypot(xx % cell - cell / 2, yy % cell - cell / 2)
        return np.where(d < cell / 4, 1., -0.4)
    if texture == 'noise':
        return rng.uniform(-1, 1, (size, size))
    raise ValueError(f'unknown texture {texture!r}; choose from {TEXTURES}')


def random_shape_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A filled rectangle, ellipse or triangle covering 3-30 % of the image."""
    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.integers(size // 8, size - size // 8, 2)
    rx, ry = rng.integers(size // 10, size // 3, 2)
    kind = rng.integers(3)
    if kind == 0:
        cv2.rectangle(mask, (int(cx - rx), int(cy - ry)), (int(cx + rx), int(cy + ry)), 1, -1)
    elif kind == 1:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        pts = np.stack([cx + rng.integers(-rx, rx + 1, 3), cy + rng.integers(-ry, ry + 1, 3)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask.astype(bool)


def render_sample(size: int, class_ids: Sequence[int], rng: np.random.Generator):
    """One (image RGB uint8, label uint8) pair."""
    looks = class_appearance(len(class_ids))
    label = np.zeros((size, size), np.uint8)
    image = np.zeros((size, size, 3), np.float32)

    def paint(region: np.ndarray, k: int) -> None:
        look = looks[k]
        pattern = texture_pattern(look['texture'], look['period'], size, rng)[region]
        image[region] = look['colour'] + 45.0 * pattern[:, None]
        label[region] = class_ids[k]

    paint(np.ones((size, size), bool), int(rng.integers(len(class_ids))))
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        shape = random_shape_mask(size, rng)
        if shape.sum() < 16:
            continue
        paint(shape, int(rng.integers(len(class_ids))))
        border = cv2.dilate(shape.astype(np.uint8), kernel).astype(bool) & ~shape
        label[border] = 0  # unlabelled boundary, like ADE20K
    image *= rng.uniform(0.85, 1.15)  # global brightness
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_ade20k(out_dir: str, num_train: int = 200, num_val: int = 50, size: int = 128,
                          num_classes: int = 12, seed: int = 0, class_ids: Sequence[int] = None) -> str:
    """Write ``out_dir/ADEChallengeData2016/{images,annotations}/{training,validation}``.

    Returns the data root (``.../ADEChallengeData2016``), ready for the
    ADE20K configs' ``data_root``.
    """
    if class_ids is None and not 1 <= num_classes <= len(DEFAULT_CLASS_IDS):
        raise ValueError(f'num_classes must be 1..{len(DEFAULT_CLASS_IDS)} (the default class ids); '
                         f'got {num_classes}: pass class_ids for other classes')
    class_ids = tuple(class_ids or DEFAULT_CLASS_IDS[:num_classes])
    if not 1 <= len(class_ids) <= 150 or not all(1 <= c <= 150 for c in class_ids):
        raise ValueError(f'class_ids must be 1..150 ADE20K ids (at most 150 of them), got {class_ids}')
    if len(set(class_ids)) != len(class_ids):
        raise ValueError(f'class_ids contain duplicates: {class_ids}')
    if size < 32:
        raise ValueError(f'size must be at least 32 pixels, got {size}')
    root = osp.join(out_dir, 'ADEChallengeData2016')
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, 'images', SPLITS[split])
        ann_dir = osp.join(root, 'annotations', SPLITS[split])
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, 0 if split == 'train' else 1, i])
            image, label = render_sample(size, class_ids, rng)
            name = f'ADE_{split}_{i + 1:08d}'  # ADE20K's own naming
            cv2.imwrite(osp.join(img_dir, name + '.jpg'), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(ann_dir, name + '.png'), label)
    print_log(f'wrote a synthetic ADE20K set to {root}: {num_train} train / {num_val} val images of '
              f'{size}x{size}, ADE20K ids {list(class_ids)}', logger='current')
    return root
