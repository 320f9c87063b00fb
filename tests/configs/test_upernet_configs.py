import glob
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from tests.helpers.seg import UPERNET_DIR, build_segmentor, config_path
from tinymim.apis import load_tool

CONFIGS = sorted(glob.glob(osp.join(UPERNET_DIR, '*.py')))
WIDTHS = {'t': 192, 's': 384, 'b': 768}
PAPER_DECODER = 768  # every size's pyramid and UPerHead in the paper configs; `-light` ones use the ViT's width


def test_all_sizes_and_baselines_exist():
    names = {osp.basename(c) for c in CONFIGS}
    for init in ('tinymim', 'mae', 'deit'):
        for size in 'tsb':
            assert f'upernet_{init}-vit-{size}_8xb2-160k_ade20k-512x512.py' in names
    for name in ('tinymim-vit-t-light', 'tinymim-vit-s-light', 'tinymim-star-vit-t', 'tinymim-star-vit-t-light'):
        assert f'upernet_{name}_8xb2-160k_ade20k-512x512.py' in names


@pytest.fixture(scope='module')
def unlabeled_image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('img') / 'photo.jpg')
    mmcv.imwrite(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), path)
    return path


@pytest.mark.parametrize('config', CONFIGS, ids=[osp.basename(c)[:-3] for c in CONFIGS])
def test_config_builds(config, unlabeled_image):
    cfg = Config.fromfile(config)
    model = build_segmentor(cfg.model)
    name = osp.basename(config)
    size = name.split('-vit-')[1][0]
    star = 'tinymim-star' in name
    light = '-light_' in name or 'synthetic' in name  # the CPU-sized config inherits the light one
    assert model.backbone.embed_dims == WIDTHS[size]
    decoder = WIDTHS[size] if light else PAPER_DECODER
    assert model.backbone.out_channels == [WIDTHS[size]] * 3 + [1280 if star else WIDTHS[size]]
    assert model.neck.in_channels == model.backbone.out_channels and model.neck.out_channels == decoder
    assert model.decode_head.in_channels == [decoder] * 4
    assert model.auxiliary_head.in_channels == decoder
    if 'synthetic' not in config:  # the CPU-sized config thins its head
        assert model.decode_head.channels == decoder
    # heads: the distilled TinyMIM ViT-T's 6, TinyMIM*-T's 12, the usual ones for DeiT/MAE and S/B
    expected_heads = 12 if star else 6 if size == 't' and name.startswith('upernet_tinymim') else {
        't': 3, 's': 6, 'b': 12}[size]
    assert model.backbone.num_heads == expected_heads
    assert model.backbone.dist_token is not None if star else model.backbone.dist_token is None
    assert cfg.train_dataloader.dataset.type == 'TinyMIMADE20KDataset'
    # mmseg's inference_model / MMSegInferencer run the test pipeline without LoadAnnotations
    # (tests/tools/test_inference_apis.py runs them on representative configs)
    init_default_scope('mmseg')
    inference = Compose([step for step in cfg.test_pipeline if step['type'] != 'LoadAnnotations'])
    packed = inference(dict(img_path=unlabeled_image))
    assert packed['inputs'].shape[0] == 3 and 'gt_sem_seg' not in packed['data_samples']


def test_vit_b_recipe():
    cfg = Config.fromfile(config_path('b'))
    backbone = cfg.model.backbone
    assert backbone.out_indices == [3, 5, 7, 11] and backbone.use_rel_pos_bias
    assert backbone.layer_scale_init_value == 1.0 and backbone.drop_path_rate == 0.1
    assert backbone.drop_path_schedule == 'linear'
    assert cfg.model.neck.type == 'ViTPyramidNeck' and cfg.model.neck.out_channels == 768
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.pool_scales == (1, 2, 3, 6)
    aux = cfg.model.auxiliary_head
    assert (aux.type, aux.channels, aux.in_index, aux.loss_decode.loss_weight) == ('FCNHead', 256, 2, 0.4)
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.constructor == 'TinyMIMLayerDecayOptimizerConstructor'
    assert ow.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.paramwise_cfg == dict(layer_decay_rate=0.75, decay_no_weight_decay_names=True)
    warmup, poly = cfg.param_scheduler  # (per-iteration values: tests/engine/test_reference_optim.py)
    assert (warmup.type, warmup.begin, warmup.end, poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == \
        ('LinearLR', 0, 1501, 'PolyLR', 1.0, 0.0, 0, 160001)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
    assert cfg.runner_type == 'TinyMIMRunner'
    assert Config.fromfile(config_path('s')).optim_wrapper.paramwise_cfg.layer_decay_rate == 0.8
    assert Config.fromfile(config_path('t')).optim_wrapper.paramwise_cfg.layer_decay_rate == 0.8
    star = Config.fromfile(config_path('t', 'tinymim-star'))
    assert star.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.8, decay_no_weight_decay_names=True)
    assert star.model.backbone.last_proj_dims == 1280 and star.model.backbone.dist_token


def _loss_backward(model, batch, size=512):
    model.train()
    if batch == 1:  # BN in train mode needs >1 value per channel at PPM's 1x1 scale
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size)))
        samples.append(sample)
    losses = model.loss(torch.randn(batch, 3, size, size), samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.backbone.blocks[0].attn.relative_position_bias_table.grad is not None


# The 768-channel decoder of the T and S configs is B's (run here); their widening pyramid
# trains in tests/tools/test_seg_train_test.py (TinyMIM*-T) at a small size.
@pytest.mark.slow
@pytest.mark.parametrize('size', ['t-light', 's-light', 'b'])
def test_forward_backward_512(size):
    cfg = Config.fromfile(config_path(size))
    cfg.model.pretrained = None
    model = build_segmentor(cfg.model)
    shapes = []
    model.neck.register_forward_hook(lambda mod, args, out: shapes.extend(tuple(f.shape) for f in out))
    _loss_backward(model, batch=1)
    assert shapes == [(1, WIDTHS[size[0]], s, s) for s in (128, 64, 32, 16)]


def test_swap_arch_by_cfg_options():
    train = load_tool('train')
    args = train.parse_args([config_path('b'), '--cfg-options', 'model.backbone.arch=small',
                             'model.decode_head.channels=384'])
    cfg = train.build_config(args)
    model = build_segmentor(cfg.model)
    assert model.backbone.embed_dims == 384 and model.backbone.num_heads == 6
    assert model.neck.upsample_4x[0].in_channels == 384 and model.neck.out_channels == 768
    assert model.decode_head.in_channels == [768] * 4 and model.decode_head.channels == 384
    assert model.auxiliary_head.in_channels == 768
    # the T config's distilled head count, overridden
    args = train.parse_args([config_path('t'), '--cfg-options', 'model.backbone.num_heads=3'])
    assert build_segmentor(train.build_config(args).model).backbone.num_heads == 3


def test_channel_mismatch_fails_at_build_with_both_numbers():
    cfg = Config.fromfile(config_path('b'))
    cfg.merge_from_dict({'model.backbone.arch': 'small', 'model.neck.in_channels': [768] * 4})
    with pytest.raises(ValueError, match=r'neck.in_channels\[0\] is 768 but the backbone outputs 384 channels'):
        build_segmentor(cfg.model)
    cfg = Config.fromfile(config_path('t'))
    cfg.model.decode_head.in_channels = [768, 768, 384, 768]
    with pytest.raises(ValueError, match=r'decode_head.in_channels\[2\] is 384 but the neck outputs 768'):
        build_segmentor(cfg.model)
    # mmseg's Feature2Pyramid (one width) still follows the backbone, and cannot take TinyMIM*-T's 1280-channel map
    cfg = Config.fromfile(config_path('t', 'tinymim-star'))
    cfg.model.neck = dict(type='Feature2Pyramid', embed_dim=None, rescales=[4, 2, 1, 0.5])
    with pytest.raises(ValueError, match=r'outputs \[192, 192, 192, 1280\] channels; use ViTPyramidNeck'):
        build_segmentor(cfg.model)
    cfg.model.backbone.last_proj_dims = None
    assert build_segmentor(cfg.model).neck.upsample_4x[0].in_channels == 192
