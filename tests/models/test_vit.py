"""The ViT against timm's, the relation/feature taps against hand-written math."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from tests.helpers.autograd import assert_grads_agree, param_grads
from tests.helpers.resize_reference import resize_bias_table_reference, resize_pos_embed_reference
from tests.helpers.timm_twins import perturb_, timm_block_outputs, timm_twin, twin_name
from tinymim.models import TinyMIMViT, VisionTransformer
from tinymim.models.vit import ARCH_ZOO

SMALL_ARCH = dict(embed_dims=48, num_layers=3, num_heads=3)


@pytest.mark.parametrize('img_size', [224, 512])
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
@torch.no_grad()
def test_block_outputs_match_timm(arch, img_size):
    model = perturb_(VisionTransformer(arch, img_size=img_size))
    twin = timm_twin(model, img_size)
    x = torch.randn(1, 3, img_size, img_size)
    ours = model.forward_blocks(x, range(model.num_layers))
    ref = timm_block_outputs(twin, x)
    diffs = [(ours[i] - ref[i]).abs().max().item() for i in range(model.num_layers)]
    assert max(diffs) <= 1e-5, diffs
    assert (twin.norm(ref[-1]) - model.norm(ours[model.num_layers - 1])).abs().max() <= 1e-5


@torch.no_grad()
def test_backbone_with_zero_rel_bias_and_unit_layer_scale_equals_timm_at_init():
    backbone = TinyMIMViT('tiny', img_size=224, use_rel_pos_bias=True, layer_scale_init_value=1.0).eval()
    assert all(not b.attn.relative_position_bias_table.any() for b in backbone.blocks)
    twin = timm_twin(backbone, 224, init_values=1.0)
    x = torch.randn(1, 3, 224, 224)
    maps = backbone(x)
    ref = timm_block_outputs(twin, x)
    assert len(maps) == 4
    for i, fmap in zip(backbone.out_indices, maps):
        assert fmap.shape == (1, 192, 14, 14)
        expected = ref[i][:, 1:].transpose(1, 2).reshape(1, 192, 14, 14)
        assert (fmap - expected).abs().max() <= 1e-5


@pytest.mark.parametrize('attn_impl', ['chunked', 'sdpa'])
def test_training_mode_matches_timm_in_float64(attn_impl):
    """The whole ViT training, float64: drop path 0.5 (ours skips the dropped
    samples), layer scale, a relative position bias (trained by the chunked
    attention or SDPA), the fused norm/linear and lean linear backward passes,
    a non-square 48x80 input. The reference is timm's ``VisionTransformer``
    with timm's relative-bias block, the same weights and the same seed:
    the output and every parameter's gradient must agree."""
    torch.manual_seed(0)
    model = VisionTransformer(SMALL_ARCH, img_size=(48, 80), use_rel_pos_bias=True, layer_scale_init_value=0.5,
                              drop_path_rate=0.5, attn_impl=attn_impl).double()
    perturb_(model, std=0.1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.relative_position_bias_table.normal_(std=0.3)
    twin = timm_twin(model, (48, 80), rel_pos_bias=True, init_values=0.5, drop_path_rate=0.5)
    x = torch.randn(8, 3, 48, 80, dtype=torch.float64)
    upstream = torch.randn(8, 16, 48, dtype=torch.float64)
    outs, grads = [], []
    for net in (model.train(), twin.train()):
        torch.manual_seed(1)  # the same drop-path masks: ours draws each before its branch, timm after
        out = net.forward_features(x)
        out.backward(upstream)
        outs.append(out)
        grads.append({n: p.grad for n, p in net.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert not torch.allclose(outs[0], model.eval().forward_features(x))  # some paths were dropped
    assert {twin_name(n) for n in grads[0]} == set(grads[1])
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][twin_name(name)], rtol=1e-9, atol=1e-12, msg=name)


def naive_relations(q_or_v_source: torch.Tensor, block, heads: int):
    """softmax(QKᵀ/√d) and softmax(VVᵀ/√d) from LN1 and the qkv weights, by hand."""
    b, n, c = q_or_v_source.shape
    x = F.layer_norm(q_or_v_source, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    qkv = x @ block.attn.qkv.weight.T + block.attn.qkv.bias
    q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, n, heads, c // heads).transpose(1, 2) for i in range(3))
    d = c // heads
    return (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1),
            torch.softmax(v @ v.transpose(-1, -2) / math.sqrt(d), dim=-1))


@pytest.mark.parametrize('block_index,heads', [(0, None), (2, None), (2, 6), (1, 12)])
@torch.no_grad()
def test_tap_relations_equal_naive_softmax(block_index, heads):
    model = perturb_(VisionTransformer(SMALL_ARCH, img_size=64))
    twin = timm_twin(model, 64)
    x = torch.randn(2, 3, 64, 64)
    tap = model.forward_tap(x, block_index, ('q', 'k', 'v'), num_heads=heads)
    split = heads or SMALL_ARCH['num_heads']
    d = SMALL_ARCH['embed_dims'] // split
    assert tap['q'].shape == (2, split, 17, d)
    before = twin.norm_pre(twin._pos_embed(twin.patch_embed(x)))
    for blk in twin.blocks[:block_index]:
        before = blk(before)
    ref_qk, ref_vv = naive_relations(before, model.blocks[block_index], split)
    qk = torch.softmax(tap['q'] @ tap['k'].transpose(-1, -2) / math.sqrt(d), dim=-1)
    vv = torch.softmax(tap['v'] @ tap['v'].transpose(-1, -2) / math.sqrt(d), dim=-1)
    torch.testing.assert_close(qk, ref_qk, rtol=0, atol=1e-6)
    torch.testing.assert_close(vv, ref_vv, rtol=0, atol=1e-6)


def test_relation_heads_default_and_validation():
    model = VisionTransformer(SMALL_ARCH, img_size=32, relation_heads=12)
    assert model.forward_tap(torch.randn(1, 3, 32, 32), -1, ('k',))['k'].shape == (1, 12, 5, 4)
    with pytest.raises(ValueError, match='does not divide'):
        model.forward_tap(torch.randn(1, 3, 32, 32), 0, ('q',), num_heads=5)
    with pytest.raises(ValueError, match='out of range'):
        model.forward_tap(torch.randn(1, 3, 32, 32), 3)
    with pytest.raises(ValueError, match='unknown tap outputs'):
        model.forward_tap(torch.randn(1, 3, 32, 32), 0, ('qk',))


@torch.no_grad()
def test_feature_taps_equal_block_parts():
    model = perturb_(VisionTransformer(SMALL_ARCH, img_size=32, layer_scale_init_value=0.5))
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_tap(x, 1, ('attn', 'ffn', 'block'))
    block_out = model.forward_blocks(x, [1])[1]
    torch.testing.assert_close(feats['block'], block_out, rtol=0, atol=1e-6)
    blk = model.blocks[1]
    torch.testing.assert_close(feats['block'], feats['attn'] + blk.ls2(feats['ffn']), rtol=0, atol=1e-6)


@torch.no_grad()
def test_cls_tap_is_the_final_norm_cls_token():
    model = perturb_(VisionTransformer(SMALL_ARCH, img_size=32))
    x = torch.randn(2, 3, 32, 32)
    taps = model.forward_tap(x, 1, ('q', 'block', 'cls'))
    assert set(taps) == {'q', 'block', 'cls'} and taps['cls'].shape == (2, model.embed_dims)
    torch.testing.assert_close(taps['cls'], model.forward_features(x)[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.forward_tap(x, 0, ('cls',))['cls'], taps['cls'], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='final_norm=True'):
        VisionTransformer(SMALL_ARCH, img_size=32, final_norm=False).forward_tap(x, 1, ('cls',))


def fired_modules(model: nn.Module, run) -> set:
    fired = set()
    handles = [m.register_forward_hook(lambda mod, i, o, name=name: fired.add(name))
               for name, m in model.named_modules() if name]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return fired


@pytest.mark.parametrize('outputs,must_not_run', [
    (('q', 'k', 'v'), ['blocks.1.attn.proj', 'blocks.1.norm2', 'blocks.1.mlp']),
    (('attn',), ['blocks.1.norm2', 'blocks.1.mlp']),
    (('block',), []),
])
@torch.no_grad()
def test_tap_computes_nothing_past_the_tapped_block(outputs, must_not_run):
    model = VisionTransformer(SMALL_ARCH, img_size=32)
    fired = fired_modules(model, lambda: model.forward_tap(torch.randn(1, 3, 32, 32), 1, outputs))
    later = [n for n in fired if n.startswith(('blocks.2', 'norm')) or n in must_not_run
             or any(n.startswith(m + '.') for m in must_not_run)]
    assert later == []
    assert {'patch_embed', 'blocks.0', 'blocks.1.norm1', 'blocks.1.attn.qkv'} <= fired


@pytest.mark.parametrize('grad', [False, True])  # inference (SDPA, cached bias) and training (chunked) paths
def test_run_time_resize_non_square_matches_timm_with_reference_tables(grad):
    """A ViT built for a 4x4 grid run on a 48x80 input (3x5): its position
    embedding and relative-bias tables are resized at run time. The reference
    is timm built for 3x5, given tables resized by the plain row-major
    bicubic reference (tests/resize_reference.py)."""
    model = VisionTransformer(SMALL_ARCH, img_size=64, use_rel_pos_bias=True)
    perturb_(model, std=0.1)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.relative_position_bias_table.normal_(std=0.3)
    state = dict(model.state_dict(), pos_embed=resize_pos_embed_reference(model.pos_embed, (4, 4), (3, 5)))
    for key in [k for k in state if k.endswith('relative_position_bias_table')]:
        state[key] = resize_bias_table_reference(state[key], (4, 4), (3, 5))
    built_for_3x5 = VisionTransformer(SMALL_ARCH, img_size=(48, 80), use_rel_pos_bias=True)
    built_for_3x5.load_state_dict(state)
    twin = timm_twin(built_for_3x5, (48, 80), rel_pos_bias=True)
    x = torch.randn(2, 3, 48, 80)
    with torch.set_grad_enabled(grad):
        ours = model.forward_features(x)
        assert model.blocks[0].attn.use_chunked(x) == grad
        torch.testing.assert_close(ours, twin.forward_features(x), rtol=0, atol=2e-5)


def test_input_not_divisible_by_patch_raises():
    model = VisionTransformer(SMALL_ARCH, img_size=32)
    with pytest.raises(ValueError, match=r'input size 40x33 is not divisible by the patch size 16'):
        model(torch.randn(1, 3, 40, 33))
    with pytest.raises(ValueError, match='not divisible by the patch size'):
        VisionTransformer(SMALL_ARCH, img_size=100)


def test_arch_zoo_and_options():
    assert {k: (v['embed_dims'], v['num_layers'], v['num_heads']) for k, v in ARCH_ZOO.items()} == {
        'tiny': (192, 12, 3), 'small': (384, 12, 6), 'base': (768, 12, 12), 'large': (1024, 24, 16),
        'huge': (1280, 32, 16)}
    with pytest.raises(ValueError, match='unknown ViT arch'):
        VisionTransformer('giant')
    with pytest.raises(ValueError, match='needs keys'):
        VisionTransformer(dict(embed_dims=64))
    model = VisionTransformer(SMALL_ARCH, img_size=32, num_heads=6, drop_path_rate=0.2,
                              drop_path_schedule='constant', pos_embed_type='sincos')
    assert model.blocks[0].attn.num_heads == 6
    assert [b.drop_path1.drop_prob for b in model.blocks] == pytest.approx([0.2] * 3)
    assert not model.pos_embed.requires_grad
    linear = VisionTransformer(SMALL_ARCH, img_size=32, drop_path_rate=0.2)
    assert isinstance(linear.blocks[0].drop_path1, nn.Identity)
    assert linear.blocks[2].drop_path1.drop_prob == pytest.approx(0.2)


def test_layer_depth_and_no_weight_decay():
    model = VisionTransformer(SMALL_ARCH, img_size=32, use_rel_pos_bias=True)
    assert model.get_layer_depth('cls_token') == (0, 5)
    assert model.get_layer_depth('patch_embed.proj.weight') == (0, 5)
    assert model.get_layer_depth('blocks.2.mlp.fc1.weight') == (3, 5)
    assert model.get_layer_depth('norm.weight') == (4, 5)
    assert model.get_layer_depth('backbone.blocks.0.norm1.weight', prefix='backbone.') == (1, 5)
    assert model.get_layer_depth('decode_head.conv_seg.weight', prefix='backbone.') == (4, 5)
    assert {'cls_token', 'pos_embed', 'blocks.0.attn.relative_position_bias_table'} <= model.no_weight_decay()


def test_backbone_out_indices_and_registry():
    backbone = MODELS.build(dict(type='TinyMIMViT', arch=SMALL_ARCH, img_size=32, out_indices=(0, -1)))
    assert backbone.out_indices == (0, 2)
    assert [m.shape for m in backbone(torch.randn(1, 3, 32, 64))] == [(1, 48, 2, 4)] * 2
    with pytest.raises(ValueError, match='out of range'):
        TinyMIMViT(SMALL_ARCH, img_size=32, out_indices=(3,))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('attn_impl', ['chunked', 'sdpa'])
def test_mixed_precision_training_step(attn_impl, dtype):
    """Training under autocast with drop path, layer scale and a trainable
    relative position bias: bf16 (the benchmarks' ``--amp``) and fp16
    (mmengine's ``AmpOptimWrapper`` default on GPUs). Every attention path,
    the fused norm/linear functions, the MLP and drop path take
    low-precision activations. With the same drop-path masks, the output
    stays close to fp32's and every parameter's gradient matches fp32's
    (measured: cosine >= 0.9999, norms within 0.3 %)."""
    torch.manual_seed(0)
    backbone = TinyMIMViT(SMALL_ARCH, img_size=32, use_rel_pos_bias=True, drop_path_rate=0.5,
                          layer_scale_init_value=0.5, attn_impl=attn_impl, out_indices=(-1,))
    perturb_(backbone, std=0.1)  # layer scales, norms, biases and tokens off their init
    with torch.no_grad():
        for blk in backbone.blocks:
            blk.attn.relative_position_bias_table.normal_(std=0.3)
    backbone.train()
    x, upstream = torch.randn(4, 3, 32, 32), torch.randn(4, 48, 2, 2)

    def step(autocast: bool):
        backbone.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same drop-path masks
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            (out,) = backbone(x)
        (out.float() * upstream).sum().backward()
        return out, param_grads(backbone)
    fp32_out, fp32_grads = step(False)
    out, grads = step(True)
    torch.testing.assert_close(out.float(), fp32_out, rtol=0.05, atol=0.05)
    assert fp32_grads.keys() == {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert_grads_agree(grads, fp32_grads, min_cos=0.99, max_norm_diff=0.02)
