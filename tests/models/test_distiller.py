import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import get_state_dict
from mmseg.registry import MODELS

from tests.helpers import ROOT
from tests.helpers.autograd import assert_grads_agree, param_grads
from tests.helpers.distill import TINY_STUDENT, TINY_TEACHER, distiller_cfg, naive_relation_kl, write_teacher
from tests.helpers.timm_twins import timm_twin
from tinymim.models.distillers.masking import random_token_index
from tinymim.models.losses import feature_loss

DISTILL_SCHEDULE = osp.join(ROOT, 'mmseg_configs/_base_/schedules/distill_300e.py')


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'mae_tiny.pth'
    write_teacher(path)
    return path


def build(teacher_path, **kwargs):
    return MODELS.build(distiller_cfg(teacher_path, **kwargs))


# ------------------------------------- reference parts: timm's ViT, by hand
def tokens_before(vit, x, block, token_index=None):
    """Tokens entering 1-based ``block`` and that block, in timm's ViT with ``vit``'s weights
    (``token_index``: the patches MAE masking keeps, after the position embedding)."""
    twin = timm_twin(vit, tuple(x.shape[-2:]))
    tokens = twin._pos_embed(twin.patch_embed(x))
    if token_index is not None:
        keep = torch.cat([token_index.new_zeros(token_index.shape[0], 1), token_index + 1], dim=1)
        tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
    for blk in twin.blocks[:block - 1]:
        tokens = blk(tokens)
    return tokens, twin.blocks[block - 1]


def qkv_by_hand(vit, x, block, heads, token_index=None):
    tokens, blk = tokens_before(vit, x, block, token_index)
    h = F.layer_norm(tokens, (vit.embed_dims,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
    qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
    b, n, _ = h.shape
    return [t.reshape(b, n, heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]


def parts_by_hand(vit, x, block):
    """Ĥ = x + γ1·MHSA(LN1(x)), H̃ = FFN(LN2(Ĥ)) and F = Ĥ + γ2·H̃ from timm's block modules."""
    tokens, blk = tokens_before(vit, x, block)
    attn = tokens + blk.ls1(blk.attn(blk.norm1(tokens)))
    ffn = blk.mlp(blk.norm2(attn))
    return dict(attn=attn, ffn=ffn, block=attn + blk.ls2(ffn))


def merged(t):
    return t.transpose(1, 2).flatten(2)


# --------------------------------------------------------------------- tests
def test_default_is_qk_vv_and_equals_naive_kl(teacher_path):
    model = build(teacher_path).eval()  # eval: no drop path, so the by-hand pass is the same function
    x = torch.randn(2, 3, 32, 32)
    losses = model(x)
    assert set(losses) == {'loss_qk', 'loss_vv'}
    assert model.relation_heads == TINY_TEACHER['num_heads']
    tq, tk, tv = qkv_by_hand(model.teacher, x, 2, 4)
    sq, sk, sv = qkv_by_hand(model.student, x, 2, 4)  # student split into the teacher's 4 heads
    assert abs(losses['loss_qk'].item() - naive_relation_kl(sq, sk, tq, tk).item()) < 1e-5
    assert abs(losses['loss_vv'].item() - naive_relation_kl(sv, sv, tv, tv).item()) < 1e-5


def test_two_views_go_to_their_models(teacher_path):
    model = build(teacher_path).eval()
    xt, xs = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    loss = model(dict(teacher=xt, student=xs))['loss_qk']
    tq, tk, _ = qkv_by_hand(model.teacher, xt, 2, 4)
    sq, sk, _ = qkv_by_hand(model.student, xs, 2, 4)
    assert abs(loss.item() - naive_relation_kl(sq, sk, tq, tk).item()) < 1e-5
    with pytest.raises(KeyError, match='student'):
        model(dict(teacher=xt))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_mixed_precision_training_step(teacher_path, dtype):
    """Training under autocast (bf16: the benchmarks' ``--amp``; fp16:
    mmengine's ``AmpOptimWrapper`` default on GPUs) with drop path, layer
    scale and a relative position bias on the student: drop path,
    attention, MLP and the fp32 relation loss all take low-precision
    activations. With the same drop-path masks, the loss stays close to
    fp32's and every trainable parameter's gradient matches fp32's
    (measured: cosine >= 0.9998, norms within 0.6 %)."""
    student = dict(distiller_cfg(teacher_path)['student'], drop_path_rate=0.5, layer_scale_init_value=0.5,
                   use_rel_pos_bias=True)
    model = build(teacher_path, student=student).train()
    with torch.no_grad():
        for blk in model.student.blocks:
            blk.attn.relative_position_bias_table.normal_(std=0.3)
            blk.ls1.gamma.uniform_(0.2, 0.8)
    x = torch.randn(4, 3, 32, 32)

    def step(autocast: bool):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same drop-path masks
        with torch.autocast('cpu', dtype=dtype, enabled=autocast):
            losses = model(x)
        sum(losses.values()).backward()
        return losses, param_grads(model)
    fp32, fp32_grads = step(False)
    losses, grads = step(True)
    assert all(v.dtype == torch.float32 for v in losses.values())
    loss, fp32_loss = sum(losses.values()).item(), sum(fp32.values()).item()
    assert abs(loss - fp32_loss) < 0.01 * fp32_loss
    assert fp32_grads.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert_grads_agree(grads, fp32_grads, min_cos=0.99, max_norm_diff=0.02)


def test_teacher_frozen_outside_optimizer_and_checkpoint(teacher_path):
    model = build(teacher_path)
    model.train()
    assert not model.teacher.training and model.student.training
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert teacher_ids <= {id(p) for p in model.parameters()}  # a registered submodule...
    # ...that the distillation config's optimizer leaves out
    optim_cfg = Config.fromfile(DISTILL_SCHEDULE).optim_wrapper
    init_default_scope('mmseg')  # as the Runner does
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    assert not teacher_ids & {id(p) for group in optim_wrapper.param_groups for p in group['params']}
    # the same groups as mmengine's default constructor, which warns once per frozen tensor instead
    default = build_optim_wrapper(model, dict(optim_cfg, constructor='DefaultOptimWrapperConstructor'))
    assert ([[id(p) for p in group['params']] for group in optim_wrapper.param_groups]
            == [[id(p) for p in group['params']] for group in default.param_groups])
    assert all(k.startswith('student.') for k in model.state_dict())
    assert all(k.startswith('student.') for k in get_state_dict(model))  # what mmengine's checkpoints save
    assert all(k.startswith('module.student.') for k in nn.ModuleDict(dict(module=model)).state_dict())  # wrapped
    assert not any(p.requires_grad for p in model.teacher.parameters())
    # The checkpoint resumes into a fresh model; the teacher comes from its path.
    fresh = build(teacher_path)
    fresh.load_state_dict(model.state_dict(), strict=True)
    # A state dict that does hold teacher entries leaves the loaded teacher as it is.
    teacher_before = copy.deepcopy(fresh.teacher.state_dict())
    fresh.load_state_dict(dict(model.state_dict(), **{f'teacher.{k}': torch.zeros_like(v)
                                                      for k, v in teacher_before.items()}), strict=True)
    assert all(torch.equal(v, teacher_before[k]) for k, v in fresh.teacher.state_dict().items())
    # .to()/.double() move the teacher with the model.
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64


def test_unused_student_tail_is_frozen(teacher_path):
    student = dict(arch=dict(TINY_STUDENT, num_layers=3), img_size=32, pos_embed_type='sincos')
    model = build(teacher_path, student=student, student_block=2)
    model.train()
    sum(model(torch.randn(2, 3, 32, 32)).values()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable == with_grad  # what trains gets gradient: DDP needs no find_unused_parameters
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert 'student.blocks.1.attn.qkv.weight' in trainable and 'student.blocks.0.mlp.fc2.weight' in trainable
    for name in ('student.blocks.1.attn.proj.weight', 'student.blocks.1.mlp.fc1.weight',
                 'student.blocks.1.norm2.weight', 'student.blocks.2.attn.qkv.weight', 'student.norm.weight',
                 'student.pos_embed'):
        assert name in frozen


def test_loss_halves_quickly_and_teacher_stays_bit_identical(teacher_path):
    model = build(teacher_path)
    model.train()
    before = copy.deepcopy(model.teacher.state_dict())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    x = torch.randn(4, 3, 32, 32)
    first = None
    for step in range(100):
        loss = sum(model(x).values())
        first = first if first is not None else loss.item()
        if loss.item() < first / 2:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 2, f'loss {first:.4f} -> {loss.item():.4f} after {step} steps'
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.teacher.parameters())


SWITCHES = {
    'relation_qq_kk': dict(targets=[dict(type='relation', pairs=('qq', 'kk'))]),
    'feature_block': dict(targets=[dict(type='feature', feature='block')]),
    'feature_attn': dict(targets=[dict(type='feature', feature='attn', loss='cosine')]),
    'feature_ffn': dict(targets=[dict(type='feature', feature='ffn')]),
    'feature_q': dict(targets=[dict(type='feature', feature='q', loss='cosine')]),
    'feature_k': dict(targets=[dict(type='feature', feature='k')]),
    'feature_v': dict(targets=[dict(type='feature', feature='v')]),
    'cls': dict(targets=[dict(type='cls')]),
    'masked_input': dict(mask_ratio=0.5),
}


def expected_losses(model, x, switch, token_index=None):
    t, s = model.teacher, model.student
    if switch == 'relation_qq_kk':
        tq, tk, _ = qkv_by_hand(t, x, 2, 4)
        sq, sk, _ = qkv_by_hand(s, x, 2, 4)
        return dict(loss_qq=naive_relation_kl(sq, sq, tq, tq), loss_kk=naive_relation_kl(sk, sk, tk, tk))
    if switch.startswith('feature_'):
        feature, target = switch[len('feature_'):], next(iter(model.targets.values()))
        if feature in 'qkv':
            st, tt = (merged(qkv_by_hand(vit, x, 2, 4)['qkv'.index(feature)]) for vit in (s, t))
        else:
            st, tt = parts_by_hand(s, x, 2)[feature], parts_by_hand(t, x, 2)[feature]
        return {f'loss_feat_{feature}': feature_loss(target.proj(st), tt, target.loss)}
    if switch == 'cls':
        target = model.targets['cls']
        s_cls, t_cls = (timm_twin(vit, (32, 32)).forward_features(x)[:, 0] for vit in (s, t))
        return dict(loss_cls=feature_loss(target.proj(s_cls), t_cls, 'kl'))
    # masked input: student sees the kept patches; teacher relations restricted to CLS + the same patches
    keep = torch.cat([torch.zeros(x.shape[0], 1, dtype=torch.long), token_index + 1], dim=1)
    tq, tk, tv = (r[:, :, keep[0]] if x.shape[0] == 1 else torch.stack([r[i][:, keep[i]] for i in range(x.shape[0])])
                  for r in qkv_by_hand(t, x, 2, 4))
    sq, sk, sv = qkv_by_hand(s, x, 2, 4, token_index)
    return dict(loss_qk=naive_relation_kl(sq, sk, tq, tk), loss_vv=naive_relation_kl(sv, sv, tv, tv))


@pytest.mark.parametrize('switch', list(SWITCHES))
def test_target_switch(teacher_path, switch):
    model = build(teacher_path, **SWITCHES[switch]).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    losses = model(x)
    token_index = None
    if switch == 'masked_input':
        torch.manual_seed(1)
        token_index = random_token_index(2, 4, 0.5, x.device)
        assert token_index.shape == (2, 2)
    expected = expected_losses(model, x, switch, token_index)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert abs(losses[name].item() - value.item()) < 1e-5, name
    sum(losses.values()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {n for n, p in model.named_parameters() if p.requires_grad}
    if switch == 'cls':
        assert 'student.norm.weight' in grads
    if switch in ('feature_block', 'feature_ffn'):
        assert 'student.blocks.1.mlp.fc2.weight' in grads
    if switch.startswith('feature_') or switch == 'cls':
        assert any(n.startswith('targets.') for n in grads)  # the 32 -> 64 projection trains


def test_tensor_mode_returns_relations(teacher_path):
    model = build(teacher_path).eval()
    out = model(torch.randn(2, 3, 32, 32), mode='tensor')
    for role in ('teacher', 'student'):
        assert out[role]['relation_qk'].shape == (2, 4, 5, 5)
        torch.testing.assert_close(out[role]['relation_vv'].sum(-1), torch.ones(2, 4, 5))
    with pytest.raises(ValueError, match="mode='loss'"):
        model(torch.randn(1, 3, 32, 32), mode='predict')


BAD = [
    (dict(teacher_block=4), ValueError, r'teacher_block=4 is not a block of the teacher \(blocks are numbered 1..3'),
    (dict(teacher_block=0), ValueError, 'numbered 1..3'),
    (dict(student_block=3), ValueError, 'student_block=3'),
    (dict(relation_heads=3), ValueError, 'relation_heads=3 does not divide the width embed_dims=64'),
    (dict(student=dict(arch=TINY_STUDENT, num_heads=5)), ValueError, 'student: num_heads=5 does not divide'),
    (dict(targets=[dict(type='feature', feature='block', project=False)]), ValueError,
     'teacher is 64 wide and the student 32'),
    (dict(targets=[dict(type='attention')]), ValueError, "unknown target type 'attention'"),
    (dict(targets=[dict(type='feature', feature='mlp')]), ValueError, "unknown feature target 'mlp'"),
    (dict(targets=[dict(type='relation', pairs=('qx',))]), ValueError, 'two letters of q/k/v'),
    (dict(targets=[dict(type='feature', feature='q', loss='l2')]), ValueError, "unknown loss 'l2'"),
    (dict(targets=[dict(type='relation', pairs=('qk',)), dict(type='relation', pairs=('qk',))]), ValueError,
     'repeat the losses'),
    (dict(targets=[]), ValueError, 'targets is empty'),
    (dict(mask_ratio=1.0), ValueError, 'mask_ratio'),
]


@pytest.mark.parametrize('kwargs,error,message', BAD)
def test_bad_configs_fail_at_build(teacher_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        build(teacher_path, **kwargs)


def test_missing_teacher_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / 'nope' / 'mae_pretrain_vit_large.pth'
    with pytest.raises(FileNotFoundError, match='mae_pretrain_vit_large.pth does not exist'):
        build(missing)
    with pytest.raises(ValueError, match='teacher.checkpoint is required'):
        build(None)


def test_relation_heads_set_on_a_vit_config_are_used_or_clash(teacher_path):
    student = dict(arch=TINY_STUDENT, img_size=32, pos_embed_type='sincos')
    assert build(teacher_path, teacher=dict(arch=TINY_TEACHER, img_size=32, checkpoint=str(teacher_path),
                                            relation_heads=8)).relation_heads == 8
    assert build(teacher_path, student=dict(student, relation_heads=8)).relation_heads == 8
    with pytest.raises(ValueError, match=r"relation head counts disagree: \{'relation_heads': 2, "
                                         r"'student.relation_heads': 8\}"):
        build(teacher_path, relation_heads=2, student=dict(student, relation_heads=8))


def test_teacher_weights_its_checkpoint_lacks_must_change_nothing(teacher_path):
    teacher = dict(arch=TINY_TEACHER, img_size=32, checkpoint=str(teacher_path))
    # Layer scale of 1 and zero relative-bias tables leave the MAE teacher's function as it is.
    build(teacher_path, teacher=dict(teacher, layer_scale_init_value=1.0, use_rel_pos_bias=True))
    with pytest.raises(ValueError, match=r'lacks 6 \(blocks.\*.ls1.gamma x3, blocks.\*.ls2.gamma x3\).*frozen teacher'):
        build(teacher_path, teacher=dict(teacher, layer_scale_init_value=0.1))


def test_teacher_without_final_norm_weights_cannot_feed_the_cls_target(tmp_path):
    vit = write_teacher(tmp_path / 'finetuned.pth')
    state = {k: v for k, v in vit.state_dict().items() if not k.startswith('norm.')}
    state.update({'fc_norm.weight': torch.ones(64), 'fc_norm.bias': torch.zeros(64)})
    torch.save({'model': state}, str(tmp_path / 'finetuned.pth'))  # a fine-tuned file: fc_norm, no norm
    build(tmp_path / 'finetuned.pth')  # relations never use the final norm
    with pytest.raises(ValueError, match=r'lacks 2 \(norm.weight, norm.bias\)'):
        build(tmp_path / 'finetuned.pth', targets=[dict(type='cls')])


def test_ffn_target_with_layer_scale_leaves_no_trainable_weight_without_gradient(teacher_path):
    # H̃ is taken before ls2, so ls2 is frozen like the rest of the unused block (DDP needs every
    # trainable weight to get a gradient when find_unused_parameters=False).
    model = build(teacher_path, student=dict(arch=TINY_STUDENT, img_size=32, pos_embed_type='sincos',
                                             layer_scale_init_value=0.1),
                  targets=[dict(type='feature', feature='ffn')])
    sum(model(torch.randn(2, 3, 32, 32)).values()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'student.blocks.1.ls2.gamma' not in trainable and 'student.blocks.1.ls1.gamma' in trainable
    assert trainable == {n for n, p in model.named_parameters() if p.grad is not None}
