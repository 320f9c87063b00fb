import logging
import re

import pytest
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from tests.helpers.seg import TINY_ARCH, build_segmentor, tiny_model_cfg

BASE_LR, BASE_WD, RATE = 1e-3, 0.05, 0.75
NUM_LAYERS = TINY_ARCH['num_layers']


def expected_layer_id(name: str) -> int:
    """Spec section 5, written out independently of get_layer_depth."""
    if name in ('backbone.cls_token', 'backbone.pos_embed') or name.startswith('backbone.patch_embed.'):
        return 0
    match = re.match(r'backbone\.blocks\.(\d+)\.', name)
    return int(match.group(1)) + 1 if match else NUM_LAYERS + 1


def expects_no_decay(name: str, param) -> bool:
    leaf = name.split('.')[-1]
    return (name in ('backbone.pos_embed', 'backbone.cls_token') or leaf == 'relative_position_bias_table'
            or leaf == 'bias' or '.norm' in name or '.bn.' in name or leaf == 'gamma' or param.ndim == 1)


def optim_cfg(**paramwise):
    return dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=BASE_LR, betas=(0.9, 0.999),
                                                    weight_decay=BASE_WD),
                constructor='TinyMIMLayerDecayOptimizerConstructor', paramwise_cfg=paramwise)


@pytest.fixture(scope='module')
def model():
    return build_segmentor(tiny_model_cfg())


def test_lr_and_weight_decay_follow_the_formula(model):
    wrapper = build_optim_wrapper(model, optim_cfg(layer_decay_rate=RATE))
    seen = {}
    for group in wrapper.optimizer.param_groups:
        for name, param in zip(group['param_names'], group['params']):
            seen[name] = (group['lr'], group['weight_decay'])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(seen) == names  # every trainable parameter exactly once
    for name, param in model.named_parameters():
        lr, wd = seen[name]
        assert lr == pytest.approx(BASE_LR * RATE ** (NUM_LAYERS + 1 - expected_layer_id(name))), name
        assert wd == (0. if expects_no_decay(name, param) else BASE_WD), name
    # the cases the recipe names, spelled out
    assert seen['backbone.pos_embed'] == (pytest.approx(BASE_LR * RATE ** 5), 0.)
    assert seen['backbone.cls_token'][1] == 0.
    assert seen['backbone.blocks.0.attn.relative_position_bias_table'][1] == 0.
    assert seen['backbone.blocks.3.attn.qkv.weight'] == (pytest.approx(BASE_LR * RATE), BASE_WD)
    assert seen['decode_head.conv_seg.weight'] == (pytest.approx(BASE_LR), BASE_WD)
    assert seen['neck.upsample_4x.1.weight'] == (pytest.approx(BASE_LR), 0.)  # BN weight


def test_reference_decay_of_embeddings_and_bias_tables_as_a_switch(model):
    # The reference (and mmseg 1.2.2) decay pos_embed, cls_token and the bias tables: its skip list never matches.
    wrapper = build_optim_wrapper(model, optim_cfg(layer_decay_rate=RATE, decay_no_weight_decay_names=True))
    wd = {name: group['weight_decay'] for group in wrapper.optimizer.param_groups for name in group['param_names']}
    for name in ('backbone.pos_embed', 'backbone.cls_token', 'backbone.blocks.0.attn.relative_position_bias_table'):
        assert wd[name] == BASE_WD, name
    assert wd['backbone.blocks.0.attn.qkv.bias'] == 0. and wd['backbone.blocks.0.attn.qkv.weight'] == BASE_WD


def test_table_is_logged(model):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        build_optim_wrapper(model, optim_cfg(layer_decay_rate=RATE))
    finally:
        logger.removeHandler(handler)
    out = '\n'.join(r.getMessage() for r in records)
    assert 'layer-wise lr decay, rate 0.75' in out and 'layer_0_no_decay' in out and 'backbone.cls_token' in out


def test_does_not_shadow_mmseg_constructor():
    from mmseg.engine.optimizers import LayerDecayOptimizerConstructor
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

    import tinymim.engine.optimizers as ours
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('LayerDecayOptimizerConstructor') is LayerDecayOptimizerConstructor
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('TinyMIMLayerDecayOptimizerConstructor') is \
        ours.TinyMIMLayerDecayOptimizerConstructor


def test_errors(model):
    # mmengine's paramwise options (or mmseg's num_layers) would be accepted and then ignored.
    with pytest.raises(ValueError, match=r"it cannot apply\s+\['bias_decay_mult', 'custom_keys'\]"):
        build_optim_wrapper(model, optim_cfg(layer_decay_rate=RATE, bias_decay_mult=1.0,
                                             custom_keys={'decode_head': dict(lr_mult=10.)}))
    with pytest.raises(ValueError, match='layer_decay_rate must be in'):
        build_optim_wrapper(model, optim_cfg())
    with pytest.raises(ValueError, match='layer_decay_rate must be in'):
        build_optim_wrapper(model, optim_cfg(layer_decay_rate=1.5))

    class NoDepth(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(2, 2)

    with pytest.raises(TypeError, match='get_layer_depth.*Linear has none'):
        build_optim_wrapper(NoDepth(), optim_cfg(layer_decay_rate=RATE))
