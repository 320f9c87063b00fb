"""tools/convert_checkpoint.py (``tinymim.apis.convert_checkpoint``): any supported format -> ours or timm's."""
import pytest
import torch
from mmseg.models.backbones import BEiT
from timm.models.vision_transformer import VisionTransformer as TimmViT

from tests.helpers.seg import run_tool
from tinymim.apis import convert_checkpoint, load_tool
from tinymim.models import TinyMIMViT, VisionTransformer
from tinymim.models.vit_weights import load_vit_checkpoint, read_checkpoint

tool = load_tool('convert_checkpoint')

ARCH = dict(embed_dims=64, num_layers=2, num_heads=2)


def random_vit(**kwargs):
    model = VisionTransformer(ARCH, img_size=64, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'usage:' in out and '--to {tinymim,timm}' in out and '--img-size' in out


@torch.no_grad()
@pytest.mark.slow
def test_official_mae_to_timm_loads_into_timm(tmp_path):
    src = random_vit()
    torch.save({'model': src.state_dict()}, tmp_path / 'mae.pth')
    run_tool('tools/convert_checkpoint.py', str(tmp_path / 'mae.pth'), str(tmp_path / 'timm.pth'), '--to', 'timm')
    state = torch.load(tmp_path / 'timm.pth', weights_only=True)
    timm_vit = TimmViT(img_size=64, embed_dim=64, depth=2, num_heads=2, num_classes=0).eval()
    timm_vit.load_state_dict(state)  # strict: exactly timm's keys
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(timm_vit.forward_features(x), src(x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_mmseg_beit_to_tinymim_format_with_resize(tmp_path):
    beit = BEiT(img_size=64, embed_dims=64, num_layers=2, num_heads=2, out_indices=(1,),
                norm_cfg=dict(type='LN', eps=1e-6))
    for p in beit.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    torch.save({'state_dict': {'backbone.' + k: v.half() for k, v in beit.state_dict().items()}},
               tmp_path / 'upernet_beit.pth')
    dst = tmp_path / 'out' / 'beit-128.pth'
    convert_checkpoint(str(tmp_path / 'upernet_beit.pth'), str(dst), img_size=[128])
    converted = read_checkpoint(str(dst))
    meta = converted['meta']
    assert meta['format'] == 'tinymim-vit' and meta['grid_size'] == [8, 8] and meta['arch'] is None
    assert "'backbone.' weights, mmseg BEiT keys" in meta['source_format']
    state = converted['state_dict']
    assert state['pos_embed'].shape == (1, 65, 64) and state['pos_embed'].dtype == torch.float16
    assert state['blocks.0.attn.relative_position_bias_table'].shape == (15 * 15 + 3, 2)
    model = TinyMIMViT(ARCH, img_size=128, out_indices=(1,), use_rel_pos_bias=True, layer_scale_init_value=1.)
    assert load_vit_checkpoint(model, str(dst))['fresh'] == []


def test_distiller_checkpoint_with_zoo_arch(tmp_path):
    student = VisionTransformer('tiny', img_size=32)
    torch.save({'state_dict': {'student.' + k: v for k, v in student.state_dict().items()}, 'meta': {}},
               tmp_path / 'iter_100.pth')
    out = convert_checkpoint(str(tmp_path / 'iter_100.pth'), str(tmp_path / 'vit-t.pth'))
    assert out['meta']['arch'] == 'tiny' and out['meta']['grid_size'] == [2, 2]
    torch.testing.assert_close(out['state_dict']['blocks.11.mlp.fc2.weight'],
                               student.state_dict()['blocks.11.mlp.fc2.weight'], rtol=0, atol=0)


def test_wrong_arch_and_same_path_raise(tmp_path):
    torch.save({'model': random_vit().state_dict()}, tmp_path / 'mae.pth')
    with pytest.raises(ValueError, match='has 2 blocks but the model has 12'):
        convert_checkpoint(str(tmp_path / 'mae.pth'), str(tmp_path / 'out.pth'), arch='small')
    with pytest.raises(ValueError, match='refusing to overwrite'):
        convert_checkpoint(str(tmp_path / 'mae.pth'), str(tmp_path / 'mae.pth'))
    assert not (tmp_path / 'out.pth').exists()


def test_grid_of_a_non_square_checkpoint(tmp_path):
    """A segmentation checkpoint trained at 32x64 px (a 2x4 grid) without meta.grid_size: conversion asks
    for the grid; given with --grid, it is recorded and the tables are resized from it."""
    src = VisionTransformer(ARCH, img_size=(32, 64), use_rel_pos_bias=True)
    torch.save({'model': src.state_dict()}, tmp_path / 'seg.pth')
    with pytest.raises(ValueError, match=r'records no grid .*--grid H W'):
        convert_checkpoint(str(tmp_path / 'seg.pth'), str(tmp_path / 'out.pth'))
    convert_checkpoint(str(tmp_path / 'seg.pth'), str(tmp_path / 'same.pth'), grid=[2, 4])
    same = read_checkpoint(str(tmp_path / 'same.pth'))
    assert same['meta']['grid_size'] == [2, 4]
    torch.testing.assert_close(same['state_dict']['pos_embed'], src.pos_embed.detach(), rtol=0, atol=0)
    # through the command line: --grid and --img-size as users pass them
    tool.main([str(tmp_path / 'seg.pth'), str(tmp_path / 'square.pth'), '--grid', '2', '4', '--img-size', '64'])
    square = read_checkpoint(str(tmp_path / 'square.pth'))
    assert square['meta']['grid_size'] == [4, 4] and square['state_dict']['pos_embed'].shape == (1, 17, 64)


def test_reference_tstar_files(tmp_path):
    """TinyMIM-FT-Tstar.pth keeps its distillation token and conv1x1; a reference (mmseg 0.x)
    TinyMIM*-T segmentation checkpoint gives its backbone, in timm names."""
    from tests.helpers.reference_segmentation import (
        RefBackbone,
        ft_tstar_file,
        randomize,
        reference_checkpoint,
        reference_heads,
    )

    ref = randomize(RefBackbone(32, 2, 4, (4, 4), star=True, proj_dims=48, out=64))
    ft_tstar_file(tmp_path / 'TinyMIM-FT-Tstar.pth', ref, grid_side=4)
    out = convert_checkpoint(str(tmp_path / 'TinyMIM-FT-Tstar.pth'), str(tmp_path / 'tstar.pth'))
    assert out['meta']['grid_size'] == [4, 4]
    converted = out['state_dict']
    assert converted['pos_embed'].shape == (1, 18, 32) and 'dist_token' in converted
    assert converted['conv1x1.1.weight'].shape == (48, 32) and not any(k.startswith(('head', 'fc_norm'))
                                                                       for k in converted)
    head, aux = reference_heads(64, 8, 8)
    torch.save(reference_checkpoint(ref, head, aux), tmp_path / 'upernet_tstar.pth')
    out = convert_checkpoint(str(tmp_path / 'upernet_tstar.pth'), str(tmp_path / 'tstar_backbone.pth'))
    assert "'backbone.' weights, BEiT-style keys" in out['meta']['source_format']
    torch.testing.assert_close(out['state_dict']['blocks.1.ls2.gamma'], ref.blocks[1].gamma_2, rtol=0, atol=0)
    model = TinyMIMViT(dict(embed_dims=32, num_layers=2, num_heads=4), img_size=64, out_indices=(0, 1),
                       use_rel_pos_bias=True, layer_scale_init_value=1.0, dist_token=True, last_proj_dims=48)
    assert load_vit_checkpoint(model, str(tmp_path / 'tstar_backbone.pth'))['fresh'] == []
