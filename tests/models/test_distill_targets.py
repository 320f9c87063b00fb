"""Distillation targets are registered classes: a user's own target trains with no package edit."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmseg.registry import MODELS

from tests.helpers.distill import distiller_cfg, write_teacher
from tinymim.models.distillers import DISTILL_TARGETS, DistillTarget, RelationTarget


# What a user writes in their own module (loaded with custom_imports): a registered target.
@DISTILL_TARGETS.register_module()
class ToyMeanTokenTarget(DistillTarget):
    """Squared distance between the projected mean block token of the student and the teacher's,
    plus the final-norm CLS tokens'."""

    def __init__(self, student_dims: int, teacher_dims: int, weight: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(student_dims, teacher_dims)
        self.weight = weight
        self.outputs = {'block', 'cls'}
        self.loss_names = ['loss_toy_mean', 'loss_toy_cls']

    def forward(self, student, teacher):
        mean = (self.proj(student['block'].mean(1)) - teacher['block'].mean(1)).pow(2).mean()
        cls = (self.proj(student['cls']) - teacher['cls']).pow(2).mean()
        return {'loss_toy_mean': self.weight * mean, 'loss_toy_cls': self.weight * cls}


@DISTILL_TARGETS.register_module()
class NotATarget(nn.Module):
    pass


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'mae_tiny.pth'
    write_teacher(path)
    return path


def test_a_target_defined_outside_the_package_trains_a_step(teacher_path):
    model = MODELS.build(distiller_cfg(teacher_path, targets=[dict(type='ToyMeanTokenTarget', weight=0.5)]))
    toy = model.targets['toy_mean_toy_cls']
    assert isinstance(toy, ToyMeanTokenTarget) and toy.proj.in_features == 32 and toy.proj.out_features == 64
    assert 'targets.toy_mean_toy_cls.proj.weight' in model.state_dict()  # saved with the student
    model.train()
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    proj_before = toy.proj.weight.detach().clone()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    log_vars = model.train_step(dict(inputs=dict(teacher=images, student=images)), wrapper)
    assert {'loss', 'loss_toy_mean', 'loss_toy_cls'} <= set(log_vars) and log_vars['loss'] > 0
    assert not torch.equal(toy.proj.weight, proj_before)
    # the CLS tap needs the whole student: its last block and final norm train too
    changed = {k for k, v in model.student.state_dict().items() if not torch.equal(v, student_before[k])}
    assert {'blocks.1.mlp.fc2.weight', 'norm.weight'} <= changed
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())


def test_target_types_keep_their_config_names_and_class_names(teacher_path):
    for kind in ('relation', 'RelationTarget'):
        model = MODELS.build(distiller_cfg(teacher_path, targets=[dict(type=kind, pairs=('qk',))]))
        assert isinstance(model.targets['qk'], RelationTarget)


@pytest.mark.parametrize('entry,message', [
    (dict(type='attention'), r"unknown target type 'attention'.*'cls', 'feature', 'relation'"),
    (dict(type='NotATarget'), "unknown target type 'NotATarget'.*DistillTarget subclass"),
    (dict(type='feature'), "missing 1 required positional argument: 'feature'"),
    (dict(type='relation', pairs=('qk',), chunk=4), "unexpected keyword argument 'chunk'"),
])
def test_bad_target_entries_name_the_problem(teacher_path, entry, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(distiller_cfg(teacher_path, targets=[entry]))
