"""``mim train`` (tools/train.py) then tools/test.py (and mim test) on a generated ADE20K-format set, as users
run them."""
import glob
import json
import os.path as osp
import re
import sys

import pytest
from distill_helpers import load_tool
from seg_helpers import ROOT, run_tool, write_tiny_synthetic_config

from tinymim.datasets import make_synthetic_ade20k

DEMO_CONFIG = osp.join(ROOT, 'mmseg_configs', 'demo', 'upernet_tinymim-vit-t_1xb8-150_demo-synthetic-128x128.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg')
    data_root = make_synthetic_ade20k(str(tmp / 'data'), num_train=8, num_val=3, size=64, num_classes=4)
    config = write_tiny_synthetic_config(str(tmp / 'tiny_synthetic.py'), data_root)
    work_dir = str(tmp / 'work')
    # Through mim, which finds tools/train.py via the installed package's .mim folder.
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    proc = run_tool(mim, 'train', 'tinymim', config, '--work-dir', work_dir)
    return dict(tmp=tmp, config=config, work_dir=work_dir, log=proc.stdout + proc.stderr, data_root=data_root)


@pytest.fixture(scope='module')
def tested(trained):
    """``mim test tinymim`` (tools/test.py through tinymim/.mim/tools) on the trained checkpoint,
    painting the predictions (--show-dir) and saving them as label maps (--out)."""
    tmp = trained['tmp']
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    proc = run_tool(mim, 'test', 'tinymim', trained['config'], '--checkpoint',
                    osp.join(trained['work_dir'], 'iter_4.pth'), '--work-dir', str(tmp / 'test'),
                    '--show-dir', str(tmp / 'show'), '--out', str(tmp / 'predictions'))
    return dict(log=proc.stdout + proc.stderr, show_dir=str(tmp / 'show'), out_dir=str(tmp / 'predictions'))


def iou_metric_from_files(pred_dir: str, label_dir: str) -> dict:
    """aAcc / mIoU / mAcc recomputed from saved predictions and the ground-truth PNGs with mmseg's
    IoUMetric arithmetic, the labels reduced as the ADE20K configs load them (0 -> ignored, k -> k - 1;
    the saved predictions are k + 1 for class k)."""
    import numpy as np
    import torch
    from mmcv import imread
    from mmseg.evaluation import IoUMetric
    areas = []
    for label_path in sorted(glob.glob(osp.join(label_dir, '*.png'))):
        label = imread(label_path, flag='unchanged').astype(np.int64)
        label = np.where(label == 0, 255, label - 1)
        pred = imread(osp.join(pred_dir, osp.basename(label_path)), flag='unchanged').astype(np.int64) - 1
        areas.append(IoUMetric.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), 150, 255))
    assert areas, f'no ground-truth PNGs in {label_dir}'
    totals = [sum(a[i] for a in areas) for i in range(4)]
    metrics = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])
    return {'aAcc': metrics['aAcc'] * 100, 'mIoU': np.nanmean(metrics['IoU']) * 100,
            'mAcc': np.nanmean(metrics['Acc']) * 100}


def test_train_runs_validation_with_iou_metric(trained):
    log = trained['log']
    assert 'layer-wise lr decay' in log
    assert 'Iter(val) [3/3]' in log and 'mIoU' in log and re.search(r'\|\s+Class\s+\|\s+IoU', log)
    assert osp.isfile(osp.join(trained['work_dir'], 'iter_4.pth'))
    scalars = glob.glob(osp.join(trained['work_dir'], '*', 'vis_data', 'scalars.json'))
    metrics = [json.loads(line) for line in open(scalars[0]) if 'mIoU' in line]
    assert metrics and all(key in metrics[-1] for key in ('aAcc', 'mIoU', 'mAcc'))


def test_mim_test_reports_and_paints_predictions(tested):
    log = tested['log']
    assert 'per class results' in log and 'Iter(test) [3/3]' in log
    assert all(key in log for key in ('aAcc', 'mIoU', 'mAcc'))
    painted = glob.glob(osp.join(tested['show_dir'], '**', '*.png'), recursive=True)
    assert len(painted) == 3, painted


def test_reported_metrics_equal_those_of_the_saved_predictions(trained, tested):
    """The validation at the end of training and the test run report the metrics that mmseg's IoUMetric
    gives on the test run's saved label maps (the same checkpoint and images)."""
    expected = iou_metric_from_files(tested['out_dir'], osp.join(trained['data_root'], 'annotations', 'validation'))
    scalars = glob.glob(osp.join(trained['work_dir'], '*', 'vis_data', 'scalars.json'))
    validation = [json.loads(line) for line in open(scalars[0]) if 'mIoU' in line][-1]
    tested_metrics = {k: float(re.search(rf'\b{k}: ([\d.]+)', tested['log']).group(1)) for k in expected}
    for reported in (validation, tested_metrics):
        for key, value in expected.items():
            assert abs(reported[key] - value) <= 0.006, (key, reported, expected)


def test_test_tool_tta_and_out(trained):
    tmp = trained['tmp']
    out_dir = str(tmp / 'preds')
    proc = run_tool('tools/test.py', trained['config'], osp.join(trained['work_dir'], 'iter_4.pth'),
                    '--work-dir', str(tmp / 'tta'), '--tta', '--out', out_dir,
                    '--cfg-options', 'test_dataloader.dataset.indices=1')  # 12 views of one image
    log = proc.stdout + proc.stderr
    assert 'SegTTAModel' in log and 'mIoU' in log
    assert len(glob.glob(osp.join(out_dir, '*.png'))) == 1


def test_missing_checkpoint_is_named(trained, tmp_path):
    import subprocess
    proc = subprocess.run([sys.executable, 'tools/test.py', trained['config'], str(tmp_path / 'none.pth')],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and 'none.pth does not exist' in proc.stderr


def test_remote_checkpoints_are_left_to_mmengines_loader(tmp_path):
    # A URL is not a local file: only local paths are checked before the run starts.
    config = DEMO_CONFIG
    url = 'https://download.example.org/upernet_vit-t.pth'
    test_tool, train_tool = load_tool('test'), load_tool('train')
    cfg = test_tool.build_config(test_tool.parse_args([config, url, '--work-dir', str(tmp_path)]))
    assert cfg.load_from == url
    cfg = train_tool.build_config(train_tool.parse_args([config, '--resume', url, '--work-dir', str(tmp_path)]))
    assert cfg.load_from == url and cfg.resume


def test_missing_resume_checkpoint_is_named(tmp_path):
    train_tool = load_tool('train')
    args = train_tool.parse_args([DEMO_CONFIG, '--resume', str(tmp_path / 'none.pth'), '--work-dir', str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='--resume checkpoint .*none.pth does not exist'):
        train_tool.build_config(args)
