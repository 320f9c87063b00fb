"""The paper configs' optimizer and lr schedule against the reference runs' (mmseg 0.x /
mmcv 1.x), parameter by parameter and iteration by iteration.

The reference's ``LayerDecayOptimizerConstructor`` (BEiT's, ``paramwise_cfg=dict(num_layers=12,
layer_decay_rate=r)``) gives each parameter a layer id (``backbone.cls_token``,
``backbone.mask_token``, ``backbone.pos_embed`` and ``backbone.patch_embed.*`` 0,
``backbone.blocks.i.*`` i + 1, everything else num_layers + 1) and the lr scale
``r ** (num_layers + 1 - id)``; no weight decay for 1-D parameters, ``*.bias`` and the names
``pos_embed``/``cls_token``, which it compares with full names such as
``backbone.pos_embed``, so they are decayed after all. Its ``lr_config`` is mmcv 1.x's
``poly`` (power 1, min_lr 0, over max_iters) with a linear warm-up (1500 iterations, ratio 1e-6).
"""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope

from tests.helpers.seg import build_segmentor, config_path

REFERENCE = {'b': dict(rate=0.75), 'tinymim-star': dict(rate=0.8)}  # the reference configs' layer_decay_rate
NUM_LAYERS, BASE_LR, BASE_WD = 12, 1e-4, 0.05
WARMUP_ITERS, WARMUP_RATIO, MAX_ITERS = 1500, 1e-6, 160000


def reference_layer_id(name: str) -> int:
    if name in ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed') or \
            name.startswith('backbone.patch_embed'):
        return 0
    if name.startswith('backbone.blocks'):
        return int(name.split('.')[2]) + 1
    return NUM_LAYERS + 1


def reference_lr_and_wd(name: str, param: torch.Tensor, rate: float):
    no_decay = len(param.shape) == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')
    return BASE_LR * rate ** (NUM_LAYERS + 1 - reference_layer_id(name)), 0. if no_decay else BASE_WD


@pytest.mark.parametrize('model', sorted(REFERENCE))
def test_layer_decay_groups_are_the_reference_runs(model):
    """The B and TinyMIM*-T configs (a 12-block ViT shrunk in width, thin heads)."""
    cfg = Config.fromfile(config_path('t', model) if model != 'b' else config_path('b'))
    star = model == 'tinymim-star'
    cfg.model.backbone.arch = dict(embed_dims=16, num_layers=NUM_LAYERS, num_heads=4 if star else 2)
    cfg.model.backbone.img_size = 32
    if star:
        cfg.model.backbone.last_proj_dims = 24
        cfg.model.neck.mid_channels = 32
    cfg.model.neck.out_channels = 32
    cfg.model.decode_head.channels, cfg.model.auxiliary_head.channels = 8, 8
    cfg.model.pretrained = None
    segmentor = build_segmentor(cfg.model)
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == (BASE_LR, BASE_WD)
    wrapper = build_optim_wrapper(segmentor, dict(cfg.optim_wrapper, type='OptimWrapper'))  # Amp needs a GPU
    got = {name: (group['lr'], group['weight_decay'])
           for group in wrapper.optimizer.param_groups for name in group['param_names']}
    params = dict(segmentor.named_parameters())
    assert set(got) == set(params)
    for name, param in params.items():
        lr, wd = reference_lr_and_wd(name, param, REFERENCE[model]['rate'])
        assert got[name] == (pytest.approx(lr, rel=1e-12), wd), name
    # what the reference's rule means here, spelled out
    assert got['backbone.pos_embed'][1] == got['backbone.cls_token'][1] == BASE_WD
    assert got['backbone.blocks.0.attn.relative_position_bias_table'][1] == BASE_WD
    if star:  # the distillation token is not one of the rule's embeddings: full lr, decayed
        assert got['backbone.dist_token'] == (pytest.approx(BASE_LR), BASE_WD)


def mmcv_poly_with_linear_warmup(i: int, base_lr: float) -> float:
    """mmcv 1.x: PolyLrUpdaterHook.get_lr, then LrUpdaterHook.get_warmup_lr('linear') while i < warmup_iters."""
    regular = (base_lr - 0.0) * (1 - i / MAX_ITERS) ** 1.0 + 0.0
    if i >= WARMUP_ITERS:
        return regular
    k = (1 - i / WARMUP_ITERS) * (1 - WARMUP_RATIO)
    return regular * (1 - k)


def test_lr_schedule_is_the_reference_poly_with_linear_warmup():
    from mmseg.registry import PARAM_SCHEDULERS

    cfg = Config.fromfile(config_path('b'))
    assert cfg.train_cfg.max_iters == MAX_ITERS
    init_default_scope('mmseg')
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    wrapper = OptimWrapper(optimizer)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)) for s in cfg.param_scheduler]
    group = optimizer.param_groups[0]
    worst = (0., None)
    for i in range(MAX_ITERS):  # the lr each training iteration runs with
        expected = mmcv_poly_with_linear_warmup(i, BASE_LR)
        error = abs(group['lr'] - expected) / expected
        if error > worst[0]:
            worst = (error, i)
        for scheduler in schedulers:
            scheduler.step()
    assert worst[0] < 1e-9, f'relative error {worst[0]:.3g} at iteration {worst[1]}'
