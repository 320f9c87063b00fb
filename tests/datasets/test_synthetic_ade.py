import hashlib
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope

import tinymim  # noqa: F401  (registers modules)
from tinymim.datasets import TinyMIMADE20KDataset, ValidateSegLabels, make_synthetic_ade20k
from tinymim.datasets.synthetic_ade import DEFAULT_CLASS_IDS


def _digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            with open(osp.join(folder, name), 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def _dataset(root, split='training', **kwargs):
    return TinyMIMADE20KDataset(data_root=root, data_prefix=dict(img_path=f'images/{split}',
                                                                 seg_map_path=f'annotations/{split}'),
                                pipeline=[], **kwargs)


def test_layout_labels_and_determinism(tmp_path):
    root = make_synthetic_ade20k(str(tmp_path / 'a'), num_train=4, num_val=2, size=64, num_classes=5, seed=3)
    assert root.endswith('ADEChallengeData2016')
    for kind, ext in (('images', '.jpg'), ('annotations', '.png')):
        for split, count in (('training', 4), ('validation', 2)):
            files = sorted(os.listdir(osp.join(root, kind, split)))
            assert len(files) == count and all(f.endswith(ext) for f in files)
    ann_dir = osp.join(root, 'annotations', 'training')
    labels = [cv2.imread(osp.join(ann_dir, f), cv2.IMREAD_UNCHANGED) for f in sorted(os.listdir(ann_dir))]
    values = set(np.unique(np.stack(labels)).tolist())
    assert labels[0].shape == (64, 64) and labels[0].dtype == np.uint8
    assert 0 in values  # unlabelled shape borders
    assert values - {0} <= set(DEFAULT_CLASS_IDS[:5]) and len(values - {0}) >= 2
    image = cv2.imread(osp.join(root, 'images', 'training', 'ADE_train_00000001.jpg'))
    assert image.shape == (64, 64, 3)

    again = make_synthetic_ade20k(str(tmp_path / 'b'), num_train=4, num_val=2, size=64, num_classes=5, seed=3)
    other = make_synthetic_ade20k(str(tmp_path / 'c'), num_train=4, num_val=2, size=64, num_classes=5, seed=4)
    assert _digest(root) == _digest(again)
    assert _digest(root) != _digest(other)
    # the mmseg data set reads it with ADE20K's settings
    assert len(_dataset(root)) == 4 and len(_dataset(root, 'validation')) == 2


def test_class_colours_differ():
    from tinymim.datasets.synthetic_ade import class_appearance
    looks = class_appearance(16)
    pairs = [(a, b) for a in range(16) for b in range(a + 1, 16)]
    # every pair of classes differs in texture or clearly in colour
    assert all(looks[a]['texture'] != looks[b]['texture'] or looks[a]['period'] != looks[b]['period']
               or np.abs(looks[a]['colour'] - looks[b]['colour']).max() > 40 for a, b in pairs)


def test_bad_generator_arguments(tmp_path):
    with pytest.raises(ValueError, match='1..150'):
        make_synthetic_ade20k(str(tmp_path), 1, 1, class_ids=(0, 5))
    with pytest.raises(ValueError, match='duplicates'):
        make_synthetic_ade20k(str(tmp_path), 1, 1, class_ids=(5, 5))
    with pytest.raises(ValueError, match='num_classes must be 1..16 .*got 40: pass class_ids'):
        make_synthetic_ade20k(str(tmp_path), 1, 1, num_classes=40)


def test_missing_data_root_is_named(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'ADEChallengeData2016')
    with pytest.raises(FileNotFoundError, match='nowhere.*does not exist'):
        _dataset(missing)


def test_missing_folder_and_label_are_named(tmp_path):
    root = make_synthetic_ade20k(str(tmp_path), num_train=2, num_val=1, size=32)
    os.remove(osp.join(root, 'annotations', 'training', 'ADE_train_00000002.png'))
    with pytest.raises(FileNotFoundError, match='ADE_train_00000002.jpg'):
        _dataset(root)
    os.rename(osp.join(root, 'annotations', 'validation'), osp.join(root, 'annotations', 'val'))
    with pytest.raises(FileNotFoundError, match=r'annotations/validation'):
        _dataset(root, 'validation')


def test_label_above_150_names_the_file(tmp_path):
    from mmcv.transforms import Compose
    root = make_synthetic_ade20k(str(tmp_path), num_train=1, num_val=0, size=32)
    label_path = osp.join(root, 'annotations', 'training', 'ADE_train_00000001.png')
    label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
    label[:2, :2] = 151
    cv2.imwrite(label_path, label)
    dataset = _dataset(root)
    init_default_scope('mmseg')
    pipeline = Compose([dict(type='LoadAnnotations', reduce_zero_label=True),
                        dict(type='ValidateSegLabels', num_classes=150)])
    with pytest.raises(ValueError, match=r'ADE_train_00000001\.png has values \[151\]'):
        pipeline(dataset.get_data_info(0))


def test_valid_labels_pass_unchanged():
    seg = np.array([[0, 149], [255, 3]], np.uint8)
    out = ValidateSegLabels(num_classes=150).transform(dict(gt_seg_map=seg, seg_map_path='x.png'))
    assert out['gt_seg_map'] is seg


def test_images_without_labels_pass_through():
    """mmseg's inference_model and MMSegInferencer drop LoadAnnotations from the test pipeline."""
    results = dict(img=np.zeros((2, 2, 3), np.uint8), img_path='a.jpg')
    assert ValidateSegLabels(num_classes=150).transform(results) is results
