"""``mim train`` (tools/train.py) then tools/test.py (and mim test) on a generated ADE20K-format set, as users
run them."""
import glob
import json
import os.path as osp
import re
import sys

import pytest
from mmengine.config import Config

from tests.helpers import ROOT
from tests.helpers.seg import UPERNET_DIR, run_tool, set_test_resize, write_tiny_config
from tinymim.apis import load_tool
from tinymim.datasets import make_synthetic_ade20k

pytestmark = pytest.mark.slow  # mim/tools train and test subprocesses

DEMO_CONFIG = osp.join(ROOT, 'mmseg_configs', 'demo', 'upernet_tinymim-vit-t_1xb8-150_demo-synthetic-128x128.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg')
    data_root = make_synthetic_ade20k(str(tmp / 'data'), num_train=8, num_val=3, size=64, num_classes=4)
    config = write_tiny_config(str(tmp / 'tiny_synthetic.py'), data_root)
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


# TinyMIM*-T: the real config, with a 4-block, 32-wide ViT (4 heads, 48-channel projection), the
# reference's 4x-wide pyramid (128 channels), thin heads and a small test resize.
STAR_CONFIG = osp.join(UPERNET_DIR, 'upernet_tinymim-star-vit-t_8xb2-160k_ade20k-512x512.py')
STAR = dict(dim=32, depth=4, heads=4, proj=48, pyramid=128, head=16, aux=8)
STAR_MODEL = f"""backbone=dict(arch=dict(_delete_=True, embed_dims={STAR['dim']}, num_layers={STAR['depth']},
                           num_heads={STAR['heads']}), img_size=crop_size, out_indices=[0, 1, 2, 3],
                  last_proj_dims={STAR['proj']}),
    neck=dict(mid_channels={2 * STAR['dim']}, out_channels={STAR['pyramid']}),
    decode_head=dict(channels={STAR['head']}),
    auxiliary_head=dict(channels={STAR['aux']}),
    test_cfg=dict(crop_size=crop_size, stride=(43, 43)),  # one window per (resized) 64-px image
    pretrained=pretrained"""
STAR_EXTRA = "optim_wrapper = dict(type='OptimWrapper')  # AmpOptimWrapper needs a GPU"


def star_reference():
    from tests.helpers.reference_segmentation import RefBackbone, randomize
    return randomize(RefBackbone(STAR['dim'], STAR['depth'], STAR['heads'], (4, 4), star=True,
                                 proj_dims=STAR['proj'], out=STAR['pyramid']))


@pytest.fixture(scope='module')
def star_trained(trained):
    """Fine-tuned from a file in TinyMIM-FT-Tstar.pth's layout, as the config's recipe."""
    from tests.helpers.reference_segmentation import ft_tstar_file

    tmp = trained['tmp']
    pretrained = str(tmp / 'TinyMIM-FT-Tstar.pth')
    ft_tstar_file(pretrained, star_reference(), grid_side=3)  # 48 px: resized to the 64-px model's grid
    config = write_tiny_config(str(tmp / 'tiny_star.py'), trained['data_root'], base=STAR_CONFIG, model=STAR_MODEL,
                               iters=2, extra=STAR_EXTRA + f'\npretrained = {pretrained!r}')
    set_test_resize(Config.fromfile(config), (128, 64)).dump(config)
    work_dir = str(tmp / 'star')
    proc = run_tool('tools/train.py', config, '--work-dir', work_dir)
    return dict(tmp=tmp, config=config, work_dir=work_dir, log=proc.stdout + proc.stderr)


def test_star_config_trains_and_evaluates(star_trained):
    log = star_trained['log']
    assert 'Iter(train) [2/2]' in log and 'Iter(val) [3/3]' in log and 'mIoU' in log
    assert 'layer-wise lr decay, rate 0.8' in log
    assert osp.isfile(osp.join(star_trained['work_dir'], 'iter_2.pth'))
    assert 'TinyMIM-FT-Tstar.pth [official MAE/TinyMIM file' in log
    assert 'dropped 6 (fc_norm.* x2, head.* x2, head_dist.* x2), resized 1 (pos_embed 9->16 patches)' in log


def test_reference_star_checkpoint_through_the_test_tool(star_trained, tmp_path):
    """A reference TinyMIM*-T segmentation checkpoint evaluated with tools/test.py predicts what
    init_model + inference_model predict with it (whose logits are the reference model's:
    tests/models/test_reference_checkpoints.py)."""
    import mmcv
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    from tests.helpers.reference_segmentation import reference_checkpoint, reference_heads

    backbone = star_reference()
    head, aux = reference_heads(STAR['pyramid'], STAR['head'], STAR['aux'])
    checkpoint = str(tmp_path / 'upernet_tinymim_star_reference.pth')
    torch.save(reference_checkpoint(backbone, head, aux), checkpoint)
    out_dir = str(tmp_path / 'preds')
    metrics = load_tool('test').main([star_trained['config'], checkpoint, '--work-dir', str(tmp_path / 'test'),
                                      '--out', out_dir])
    assert 'mIoU' in metrics
    model = revert_sync_batchnorm(init_model(star_trained['config'], checkpoint, device='cpu'))
    images = sorted(glob.glob(osp.join(star_trained['tmp'], 'data', '**', 'validation', '*.jpg'), recursive=True))
    assert len(images) == 3
    for image in images:
        expected = inference_model(model, image).pred_sem_seg.data[0].numpy() + 1  # ADE20K ids (reduce_zero_label)
        written = mmcv.imread(osp.join(out_dir, osp.basename(image)[:-4] + '.png'), 'unchanged')
        assert (written == expected).all(), image
