import glob
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS, RUNNERS

from tests.helpers import ROOT
from tests.helpers.distill import TINY_TEACHER, write_images, write_teacher
from tinymim.apis import load_tool
from tinymim.models.vit import check_heads, resolve_arch

CONFIG_DIR = osp.join(ROOT, 'mmseg_configs', 'distill')
# config -> (teacher arch, teacher block, student arch, student heads, relation heads), as in the
# TinyMIM paper and its reference code:
# the relation block splits into the reference's last_heads (16 for a ViT-B student, 12 for ViT-S and
# ViT-T), which is the teacher's head count except for a TinyMIM ViT-S teacher (6 heads, relation block 12).
RECIPES = {
    'tinymim_mae-vit-l_to_vit-b_32xb128-300e_in1k.py': ('large', 18, 'base', None, 16),
    'tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py': ('base', 12, 'small', None, 12),
    'tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py': ('small', 12, 'tiny', 6, 12),
    'tinymim_mae-vit-b_to_vit-t_32xb128-300e_in1k.py': ('base', 12, 'tiny', 6, 12),
}


def test_every_distill_config_is_covered():
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py'))) == sorted(RECIPES)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_config_recipe_and_build(name, tmp_path):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    teacher_arch, block, student_arch, heads, relation_heads = RECIPES[name]
    m = cfg.model
    assert (m.teacher.arch, m.teacher_block, m.student.arch, m.student.get('num_heads')) == (teacher_arch, block,
                                                                                            student_arch, heads)
    assert m.targets == [dict(type='relation', pairs=('qk', 'vv'), weight=1.0)] and m.mask_ratio == 0
    assert (m.student.pos_embed_type, m.student.drop_path_rate, m.student.drop_path_schedule) == ('sincos', 0.1,
                                                                                                  'constant')
    # The real pairing is consistent: block within the teacher, relation heads divide both widths.
    t, s = resolve_arch(teacher_arch), resolve_arch(student_arch)
    assert block <= t['num_layers']
    assert (m.relation_heads or t['num_heads']) == relation_heads
    check_heads(t['embed_dims'], relation_heads)
    check_heads(s['embed_dims'], relation_heads)
    check_heads(s['embed_dims'], heads or s['num_heads'])
    assert cfg.default_scope == 'mmseg' and cfg.custom_imports.imports == ['tinymim']

    # Builds with the real student and a small teacher file standing in for the MAE one.
    write_teacher(tmp_path / 'teacher.pth', arch=TINY_TEACHER, img_size=224)
    m.teacher = dict(arch=TINY_TEACHER, checkpoint=str(tmp_path / 'teacher.pth'))
    m.teacher_block = 3
    m.relation_heads = None  # the stand-in's own heads
    model = MODELS.build(m)
    assert model.student.embed_dims == s['embed_dims'] and model.student.num_heads == (heads or s['num_heads'])

    m.teacher.checkpoint = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        MODELS.build(m)


def test_schedule_recipe():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py'))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.betas, opt.weight_decay) == ('AdamW', 1.5e-4, (0.9, 0.95), 0.05)
    assert cfg.auto_scale_lr == dict(base_batch_size=256, enable=True)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.begin, cosine.end, cosine.eta_min) == (
        'LinearLR', 15, 'CosineAnnealingLR', 15, 300, 0)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == 300
    assert (cfg.default_hooks.checkpoint.interval, cfg.default_hooks.checkpoint.max_keep_ckpts) == (10, 3)
    assert cfg.train_dataloader.dataset.pipeline[1].scale == (0.2, 1.0)


def test_weight_decay_groups(tmp_path):
    init_default_scope('mmseg')  # as the config's default_scope makes the Runner do
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'tinymim_mae-vit-b_to_vit-t_32xb128-300e_in1k.py'))
    write_teacher(tmp_path / 'teacher.pth', arch=TINY_TEACHER, img_size=224)
    cfg.model.teacher = dict(arch=TINY_TEACHER, checkpoint=str(tmp_path / 'teacher.pth'))
    cfg.model.teacher_block = 3
    cfg.model.targets = [dict(type='relation', pairs=('qk',)), dict(type='feature', feature='block')]
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in wrapper.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    names = dict(model.named_parameters())
    assert not {id(p) for p in model.teacher.parameters()} & set(decay)
    assert id(names['student.pos_embed']) not in decay  # fixed sin-cos
    for name in ('student.blocks.0.norm1.weight', 'student.blocks.0.attn.qkv.bias', 'targets.feat_block.proj.bias'):
        assert decay[id(names[name])] == 0, name
    # The reference's MAE-style groups exempt only biases and 1-D parameters: the (1, 1, D) CLS token decays.
    for name in ('student.cls_token', 'student.blocks.0.attn.qkv.weight', 'student.patch_embed.proj.weight',
                 'targets.feat_block.proj.weight'):
        assert decay[id(names[name])] == 0.05, name


def train_args(config, work_dir, teacher, data_root, *extra):
    return [osp.join(CONFIG_DIR, config), '--work-dir', str(work_dir), '--cfg-options',
            f'model.teacher.checkpoint={teacher}', 'model.teacher.arch=tiny', 'model.teacher_block=2',
            'model.student.arch=tiny', 'model.student_block=2', f'train_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'train_dataloader.pin_memory=False',
            'train_dataloader.dataset.pipeline.1.size=32',
            'default_hooks.logger.interval=1', *extra]


@pytest.mark.slow
def test_runner_trains_resumes_and_chains_s_to_t(tmp_path, caplog):
    """B->S for 3 iterations from the real config, resume it, then S->T with its checkpoint as teacher."""
    train = load_tool('train')
    for cls in ('n01', 'n02'):
        (tmp_path / 'imagenet' / 'train' / cls).mkdir(parents=True)
        write_images(tmp_path / 'imagenet' / 'train' / cls, 6, seed=len(cls))
    teacher_file = tmp_path / 'mae_tiny.pth'
    write_teacher(teacher_file, arch='tiny', img_size=224)
    data = tmp_path / 'imagenet'

    first = tmp_path / 'b_to_s'
    cfg = train.build_config(train.parse_args(train_args(
        'tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py', first, teacher_file, data, 'train_cfg.max_epochs=1')))
    runner = RUNNERS.build(cfg)  # as tools/train.py: the config's runner_type
    runner.train()
    assert runner.iter == 3 and (first / 'epoch_1.pth').is_file()
    # lr = 1.5e-4 x batch / 256 through auto_scale_lr
    assert runner.optim_wrapper.param_groups[0]['initial_lr'] == pytest.approx(1.5e-4 * 4 / 256)
    teacher = runner.model.teacher
    saved = torch.load(teacher_file, weights_only=True)['model']
    assert all(torch.equal(v, saved[k]) for k, v in teacher.state_dict().items())  # bit-identical after training
    assert all(p.grad is None for p in teacher.parameters())
    ckpt = torch.load(first / 'epoch_1.pth', weights_only=True)
    assert ckpt['state_dict'] and all(k.startswith('student.') for k in ckpt['state_dict'])

    cfg = train.build_config(train.parse_args(train_args(
        'tinymim_mae-vit-b_to_vit-s_32xb128-300e_in1k.py', first, teacher_file, data, 'train_cfg.max_epochs=2')
        + ['--resume']))
    runner = RUNNERS.build(cfg)
    runner.logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    runner.train()
    assert 'resumed epoch: 1, iter: 3' in caplog.text
    assert runner.iter == 6 and (first / 'epoch_2.pth').is_file()

    # The chain's last step: the S student's training checkpoint is the teacher, by path.
    second = tmp_path / 's_to_t'
    train.main(train_args('tinymim_tinymim-vit-s_to_vit-t_32xb128-300e_in1k.py', second, first / 'epoch_2.pth', data,
                          'train_cfg.max_epochs=1'))
    assert (second / 'epoch_1.pth').is_file()
