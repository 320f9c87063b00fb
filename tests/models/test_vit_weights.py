"""Every checkpoint format round-trips into the ViT; every error path raises."""
import argparse
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import save_checkpoint
from mmseg.models.backbones import MAE, BEiT
from mmseg.models.backbones import VisionTransformer as MMSegViT
from mmseg.registry import MODELS
from timm.models.vision_transformer import VisionTransformer as TimmViT

from tests.helpers.resize_reference import resize_bias_table_reference, resize_pos_embed_reference
from tinymim.models import TinyMIMViT, VisionTransformer
from tinymim.models.pos_embed import resize_pos_embed
from tinymim.models.vit_weights import detect_format, load_vit_checkpoint, read_checkpoint, to_timm_state_dict

ARCH = dict(embed_dims=64, num_layers=2, num_heads=2)


def random_vit(arch=ARCH, img_size=64, **kwargs) -> VisionTransformer:
    model = VisionTransformer(arch, img_size=img_size, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def assert_same_weights(a: dict, b: dict, keys=None):
    keys = keys if keys is not None else a.keys()
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def official_file(model, path, finetuned=False):
    """Write ``model`` the way MAE/TinyMIM's main_pretrain/main_finetune save it."""
    state = dict(model.state_dict())
    if finetuned:  # global pooling: fc_norm replaces norm, plus a classifier
        state['fc_norm.weight'], state['fc_norm.bias'] = state.pop('norm.weight'), state.pop('norm.bias')
        state['head.weight'], state['head.bias'] = torch.randn(10, 64), torch.randn(10)
    args = argparse.Namespace(model='vit_base_patch16' if finetuned else 'tinymim_vit_base_patch16', lr=1e-3)
    optimizer = torch.optim.AdamW(model.parameters()).state_dict()
    torch.save(dict(model=state, optimizer=optimizer, epoch=299, scaler={'scale': 65536.0}, args=args), path)
    return path


def test_official_mae_tinymim_round_trip(tmp_path):
    src = random_vit()
    path = official_file(src, tmp_path / 'checkpoint-299.pth')
    fmt = detect_format(read_checkpoint(path))
    assert (fmt.container, fmt.layout, fmt.finetuned) == ('model', 'timm', False)
    assert 'args.model=tinymim_vit_base_patch16' in str(fmt)
    dst = VisionTransformer(ARCH, img_size=64)
    result = load_vit_checkpoint(dst, str(path))
    assert result == dict(missing=[], unexpected=[], fresh=[], dropped=[])
    assert_same_weights(src.state_dict(), dst.state_dict())


def test_official_finetuned_drops_head_and_fc_norm(tmp_path):
    src = random_vit()
    path = official_file(src, tmp_path / 'finetuned.pth', finetuned=True)
    dst = VisionTransformer(ARCH, img_size=64)
    norm_before = dst.norm.weight.clone()
    result = load_vit_checkpoint(dst, str(path))
    assert sorted(result['dropped']) == ['fc_norm.bias', 'fc_norm.weight', 'head.bias', 'head.weight']
    assert result['fresh'] == ['norm.weight', 'norm.bias']  # fine-tuned files have no final norm
    assert torch.equal(dst.norm.weight, norm_before)
    assert_same_weights(src.state_dict(), dst.state_dict(), [k for k in dst.state_dict() if not k.startswith('norm')])


@torch.no_grad()
def test_timm_state_dict_with_layer_scale(tmp_path):
    timm_vit = TimmViT(img_size=64, embed_dim=64, depth=2, num_heads=2, num_classes=0, init_values=0.3).eval()
    for p in timm_vit.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    torch.save(timm_vit.state_dict(), tmp_path / 'timm.pth')
    assert detect_format(timm_vit.state_dict()).layout == 'timm'
    with_ls = VisionTransformer(ARCH, img_size=64, layer_scale_init_value=1.0).eval()
    load_vit_checkpoint(with_ls, str(tmp_path / 'timm.pth'))
    assert_same_weights(timm_vit.state_dict(), with_ls.state_dict())
    # A model without layer scale gets the gammas folded into proj/fc2: the same function.
    without_ls = VisionTransformer(ARCH, img_size=64).eval()
    load_vit_checkpoint(without_ls, str(tmp_path / 'timm.pth'))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(without_ls(x), timm_vit.forward_features(x), rtol=0, atol=1e-5)


def randomize_mmseg(backbone: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            p.normal_(0, 0.1)
            if '.ln' in name and name.endswith('weight'):
                p.add_(1)
    backbone.eval()  # mmseg's BEiT.train() returns None, so no chaining
    return backbone


MMSEG_BACKBONES = {
    'mmseg-mae': (MAE, dict(init_values=0.1), dict(use_rel_pos_bias=True, layer_scale_init_value=0.1)),
    'mmseg-beit': (BEiT, dict(init_values=0.1), dict(use_rel_pos_bias=True, layer_scale_init_value=0.1)),
    'mmseg-vit': (MMSegViT, dict(), dict()),
}


@pytest.mark.parametrize('layout', sorted(MMSEG_BACKBONES))
@torch.no_grad()
def test_mmseg_segmentor_checkpoint_gives_the_same_features(tmp_path, layout):
    """An mmseg UperNet checkpoint: its backbone's maps equal ours after loading."""
    cls, mmseg_kwargs, our_kwargs = MMSEG_BACKBONES[layout]
    mmseg_backbone = cls(img_size=64, embed_dims=64, num_layers=2, num_heads=2, out_indices=(0, 1),
                         final_norm=True, norm_cfg=dict(type='LN', eps=1e-6), **mmseg_kwargs)
    randomize_mmseg(mmseg_backbone)
    state = {'backbone.' + k: v for k, v in mmseg_backbone.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.randn(150, 64, 1, 1)
    save_checkpoint(dict(meta=dict(epoch=1), state_dict=state), str(tmp_path / 'upernet.pth'))
    checkpoint = read_checkpoint(str(tmp_path / 'upernet.pth'))
    assert detect_format(checkpoint).layout == layout
    ours = TinyMIMViT(ARCH, img_size=64, out_indices=(0, 1), final_norm=True, **our_kwargs).eval()
    result = load_vit_checkpoint(ours, checkpoint)
    assert 'decode_head.conv_seg.weight' in result['dropped']
    assert result['missing'] == result['unexpected'] == result['fresh'] == []
    x = torch.randn(2, 3, 64, 64)
    for theirs, mine in zip(mmseg_backbone(x), ours(x)):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


@torch.no_grad()
def test_mmseg_mae_layer_scale_folds_into_a_model_without_it():
    mae = randomize_mmseg(MAE(img_size=64, embed_dims=64, num_layers=2, num_heads=2, out_indices=(1,),
                              norm_cfg=dict(type='LN', eps=1e-6)))
    ours = TinyMIMViT(ARCH, img_size=64, out_indices=(1,), use_rel_pos_bias=True).eval()
    load_vit_checkpoint(ours, mae.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x)[0], mae(x)[0], rtol=0, atol=1e-5)


def distiller_checkpoint(student: nn.Module, teacher: nn.Module, path):
    """An mmengine checkpoint of the distiller: student.* weights, message hub, optimizer."""
    hub = MessageHub.get_instance('test_checkpoint')
    hub.update_scalar('train/loss', 0.5)
    state = {'student.' + k: v for k, v in student.state_dict().items()}
    state.update({'teacher.' + k: v for k, v in teacher.state_dict().items()})
    save_checkpoint(dict(meta=dict(epoch=3, iter=30), state_dict=state, message_hub=hub.state_dict(),
                         optimizer=torch.optim.AdamW(student.parameters()).state_dict()), str(path))
    return path


def test_distiller_checkpoint_loads_the_student(tmp_path):
    student, teacher = random_vit(), random_vit(dict(embed_dims=96, num_layers=4, num_heads=3))
    path = distiller_checkpoint(student, teacher, tmp_path / 'iter_30.pth')
    fmt = detect_format(read_checkpoint(str(path)))
    assert (fmt.container, fmt.prefix, fmt.layout) == ('state_dict', 'student.', 'timm')
    dst = VisionTransformer(ARCH, img_size=64)
    result = load_vit_checkpoint(dst, str(path))
    assert len(result['dropped']) == len(teacher.state_dict())
    assert all(k.startswith('teacher.') for k in result['dropped'])
    assert_same_weights(student.state_dict(), dst.state_dict())


@pytest.mark.parametrize('prefix', ['module.', 'backbone.', 'encoder.', 'module.student.', 'module.backbone.'])
def test_prefixes_are_stripped(prefix):
    src = random_vit()
    state = {prefix + k: v for k, v in src.state_dict().items()}
    state['neck.weight'] = torch.zeros(1)
    dst = VisionTransformer(ARCH, img_size=64)
    assert detect_format(state).prefix == prefix
    load_vit_checkpoint(dst, state)
    assert_same_weights(src.state_dict(), dst.state_dict())


def test_explicit_prefix_picks_one_of_two_vits():
    a, b = random_vit(), random_vit()
    state = {**{'student.' + k: v for k, v in a.state_dict().items()},
             **{'ema.' + k: v for k, v in b.state_dict().items()}}
    dst = VisionTransformer(ARCH, img_size=64)
    load_vit_checkpoint(dst, state, prefix='ema')
    assert_same_weights(b.state_dict(), dst.state_dict())
    with pytest.raises(ValueError, match="no weights under the prefix 'teacher.'"):
        load_vit_checkpoint(dst, state, prefix='teacher.')


@pytest.mark.parametrize('img_size,grid', [(128, (8, 8)), ((48, 80), (3, 5))])
@torch.no_grad()
def test_resize_at_load_matches_the_plain_reference(img_size, grid):
    """A 64-px checkpoint (4x4 grid) into a 128-px (8x8) or a 48x80 (3x5) model:
    pos_embed and relative-bias tables equal the plain row-major bicubic
    reference (tests/resize_reference.py), and the model computes what the
    64-px model computes at its size."""
    src = random_vit(img_size=64, use_rel_pos_bias=True)
    dst = VisionTransformer(ARCH, img_size=img_size, use_rel_pos_bias=True).eval()
    load_vit_checkpoint(dst, src.state_dict())
    torch.testing.assert_close(dst.pos_embed, resize_pos_embed_reference(src.pos_embed, (4, 4), grid),
                               rtol=0, atol=1e-6)
    for src_blk, dst_blk in zip(src.blocks, dst.blocks):
        torch.testing.assert_close(dst_blk.attn.relative_position_bias_table, resize_bias_table_reference(
            src_blk.attn.relative_position_bias_table, (4, 4), grid), rtol=0, atol=1e-6)
    x = torch.randn(1, 3, grid[0] * 16, grid[1] * 16)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_non_square_grid_is_read_from_meta_never_guessed():
    """A checkpoint trained on non-square inputs: its grid comes from
    meta.grid_size; without it, weights that cannot be square raise and ask for
    the grid, instead of being resized as some square."""
    src = random_vit(img_size=(32, 64), use_rel_pos_bias=True)  # a 2x4 grid: 8 patches, no square
    dst = VisionTransformer(ARCH, img_size=64, use_rel_pos_bias=True).eval()
    ask = r'records no grid \(meta.grid_size\) .*\(pos_embed with {}.*convert_checkpoint.py CHECKPOINT OUT --grid H W'
    with pytest.raises(ValueError, match=ask.format('8 patches')):
        load_vit_checkpoint(dst, src.state_dict())
    load_vit_checkpoint(dst, dict(state_dict=src.state_dict(), meta=dict(grid_size=[2, 4])))
    torch.testing.assert_close(dst.pos_embed, resize_pos_embed_reference(src.pos_embed, (2, 4), (4, 4)),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(dst.blocks[0].attn.relative_position_bias_table, resize_bias_table_reference(
        src.blocks[0].attn.relative_position_bias_table, (2, 4), (4, 4)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r'records the grid 1x8 \(meta.grid_size\), which its weights do not fit'):
        load_vit_checkpoint(dst, dict(state_dict=src.state_dict(), meta=dict(grid_size=[1, 8])))
    # 2x8 has a square number of patches (16); its relative-bias tables tell it is not 4x4.
    wide = random_vit(img_size=(32, 128), use_rel_pos_bias=True)
    with pytest.raises(ValueError, match=ask.format('16 patches, relative-bias tables of 48 rows')):
        load_vit_checkpoint(VisionTransformer(ARCH, img_size=128, use_rel_pos_bias=True), wide.state_dict())


def test_fresh_by_design_keys_keep_their_init():
    src = random_vit()  # no layer scale, no relative bias
    dst = TinyMIMViT(ARCH, img_size=64, out_indices=(1,), use_rel_pos_bias=True, layer_scale_init_value=0.1)
    result = load_vit_checkpoint(dst, src.state_dict())
    assert sorted(result['fresh']) == sorted(k for k in dst.state_dict() if k.endswith(
        ('relative_position_bias_table', 'ls1.gamma', 'ls2.gamma')))
    assert result['dropped'] == ['norm.weight', 'norm.bias']  # the backbone has no final norm
    assert all(not b.attn.relative_position_bias_table.any() for b in dst.blocks)
    assert all(torch.all(b.ls1.gamma == 0.1) for b in dst.blocks)


def test_fresh_keys_argument_and_sincos_pos_embed():
    state = dict(random_vit().state_dict())
    del state['cls_token'], state['pos_embed']
    dst = VisionTransformer(ARCH, img_size=64)
    with pytest.raises(ValueError, match=r'missing 2 \(cls_token, pos_embed\)'):
        load_vit_checkpoint(dst, state)
    result = load_vit_checkpoint(dst, state, fresh_keys=['cls_token', 'pos_*'])
    assert result['fresh'] == ['cls_token', 'pos_embed']
    sincos = VisionTransformer(ARCH, img_size=64, pos_embed_type='sincos')
    table = sincos.pos_embed.clone()
    assert load_vit_checkpoint(sincos, state, fresh_keys=['cls_token'])['fresh'] == ['cls_token', 'pos_embed']
    assert torch.equal(sincos.pos_embed, table)


def test_log_line_names_format_and_counts(caplog):
    logger = logging.getLogger('tinymim.test_checkpoint')
    dst = TinyMIMViT(ARCH, img_size=64, out_indices=(1,), use_rel_pos_bias=True)
    with caplog.at_level(logging.INFO, logger=logger.name):
        load_vit_checkpoint(dst, {'model': random_vit().state_dict()}, logger=logger)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "official MAE/TinyMIM file ({'model': ...}), timm keys" in line
    assert 'missing 0' in line and 'unexpected 0' in line
    assert 'fresh 2 (blocks.*.attn.relative_position_bias_table x2)' in line
    assert 'dropped 2 (norm.weight, norm.bias)' in line


# ------------------------------------------------------------------ errors
def test_wider_checkpoint_raises_naming_both_shapes():
    dst = VisionTransformer(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=64)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r'checkpoint width 64 vs model width 32.*'
                                         r'cls_token: checkpoint \(1, 1, 64\) vs model \(1, 1, 32\)'):
        load_vit_checkpoint(dst, random_vit().state_dict())
    assert_same_weights(before, dst.state_dict())  # nothing was loaded


@pytest.mark.parametrize('src_layers,dst_layers', [(2, 4), (4, 2)])
def test_other_depth_raises_naming_both_depths(src_layers, dst_layers):
    src = random_vit(dict(embed_dims=64, num_layers=src_layers, num_heads=2))
    dst = VisionTransformer(dict(embed_dims=64, num_layers=dst_layers, num_heads=2), img_size=64)
    with pytest.raises(ValueError, match=f'has {src_layers} blocks but the model has {dst_layers}'):
        load_vit_checkpoint(dst, src.state_dict())


def test_missing_weight_raises_unless_not_strict():
    state = dict(random_vit().state_dict())
    del state['blocks.1.norm1.weight']
    dst = VisionTransformer(ARCH, img_size=64)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r'missing 1 \(blocks.1.norm1.weight\)'):
        load_vit_checkpoint(dst, state)
    assert_same_weights(before, dst.state_dict())
    result = load_vit_checkpoint(dst, state, strict=False)
    assert result['missing'] == ['blocks.1.norm1.weight']
    assert_same_weights(state, dst.state_dict())


def test_relative_bias_into_a_model_without_it_raises():
    src = random_vit(use_rel_pos_bias=True)
    with pytest.raises(ValueError, match='use_rel_pos_bias=True'):
        load_vit_checkpoint(VisionTransformer(ARCH, img_size=64), src.state_dict())
    # A zero table (never trained) is the same as none and is dropped.
    with torch.no_grad():
        for blk in src.blocks:
            blk.attn.relative_position_bias_table.zero_()
    result = load_vit_checkpoint(VisionTransformer(ARCH, img_size=64), src.state_dict())
    assert len(result['dropped']) == 2


def test_unknown_keys_raise():
    state = dict(random_vit().state_dict())
    state['blocks.0.attn.q_norm.weight'] = torch.ones(32)
    with pytest.raises(ValueError, match=r'unexpected 1 \(blocks.0.attn.q_norm.weight\)'):
        load_vit_checkpoint(VisionTransformer(ARCH, img_size=64), state)
    with pytest.raises(ValueError, match='no ViT weights found'):
        load_vit_checkpoint(VisionTransformer(ARCH, img_size=64), {'conv1.weight': torch.zeros(1)})


class NotATensor:
    pass


def test_files_that_are_not_checkpoints_raise_with_the_file_name(tmp_path):
    from PIL import Image

    dst = VisionTransformer(ARCH, img_size=64)
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    image = tmp_path / 'cat.png'
    Image.new('RGB', (8, 8)).save(image)
    for path in (text, image):
        with pytest.raises(ValueError, match=f'{path.name} is not a PyTorch checkpoint'):
            load_vit_checkpoint(dst, str(path))
    with pytest.raises(FileNotFoundError, match='missing.pth does not exist'):
        load_vit_checkpoint(dst, str(tmp_path / 'missing.pth'))
    torch.save([torch.zeros(1)], tmp_path / 'list.pth')
    with pytest.raises(ValueError, match='list.pth holds a list'):
        load_vit_checkpoint(dst, str(tmp_path / 'list.pth'))
    torch.save({'model': random_vit().state_dict(), 'extra': NotATensor()}, tmp_path / 'pickled.pth')
    with pytest.raises(RuntimeError, match='pickled.pth holds an object .*NotATensor'):
        load_vit_checkpoint(dst, str(tmp_path / 'pickled.pth'))


def test_to_timm_state_dict_converts_beit_qv_bias():
    beit = BEiT(img_size=32, embed_dims=32, num_layers=1, num_heads=2, final_norm=True)
    randomize_mmseg(beit)
    conv = to_timm_state_dict(beit.state_dict())
    attn = beit.layers[0].attn
    torch.testing.assert_close(conv.state_dict['blocks.0.attn.qkv.bias'],
                               torch.cat([attn.q_bias, torch.zeros(32), attn.v_bias]), rtol=0, atol=0)
    assert torch.equal(conv.state_dict['norm.weight'], beit.ln1.weight)
    assert set(conv.filled) == {'pos_embed'}  # BEiT has no absolute position embedding
    assert not conv.state_dict['pos_embed'].any() and conv.state_dict['pos_embed'].shape == (1, 5, 32)


def test_pretrained_init_cfg_through_the_registry(tmp_path):
    src = random_vit()
    path = official_file(src, tmp_path / 'mae.pth')
    backbone = MODELS.build(dict(type='TinyMIMViT', arch=ARCH, img_size=128, use_rel_pos_bias=True,
                                 out_indices=(1,), init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    weights = backbone.state_dict()
    assert_same_weights(src.state_dict(), weights, [k for k in weights if k.startswith('blocks.')
                                                    and 'relative_position' not in k])
    torch.testing.assert_close(weights['pos_embed'], resize_pos_embed(src.pos_embed, (8, 8)), rtol=0, atol=0)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    src = random_vit()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / 'model.safetensors'))
    dst = VisionTransformer(ARCH, img_size=64)
    load_vit_checkpoint(dst, str(tmp_path / 'model.safetensors'))
    assert_same_weights(src.state_dict(), dst.state_dict())
    (tmp_path / 'broken.safetensors').write_text('not safetensors')
    with pytest.raises(ValueError, match='broken.safetensors is not a readable safetensors file'):
        load_vit_checkpoint(dst, str(tmp_path / 'broken.safetensors'))
