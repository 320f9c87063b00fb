"""What ``TinyMIMDistiller`` compares, one module per config entry of ``targets``.

Each target declares the ``VisionTransformer.forward_tap`` outputs it needs
from both models (``outputs``; ``'cls'`` asks for the CLS token after the
final norm) and maps the tapped tensors to named losses. Projections that
map student features to the teacher's width are parameters of the target,
so they train and are saved with the student.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..losses import FEATURE_LOSSES, feature_loss, relation_kl_loss
from ..vit import CLS_OUTPUT, FEATURE_OUTPUTS, QKV_OUTPUTS

FEATURE_TAPS = QKV_OUTPUTS + FEATURE_OUTPUTS

Taps = Dict[str, torch.Tensor]


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) Q/K/V -> (B, N, heads*d); token maps pass through."""
    return x.transpose(1, 2).flatten(2) if x.dim() == 4 else x


class RelationTarget(nn.Module):
    """KL between teacher and student relations ``softmax(X Yᵀ/√d)``.

    ``pairs`` are two letters of q/k/v each: 'qk' and 'vv' are TinyMIM's
    default, 'qq' and 'kk' the paper's other relations. Losses are named
    ``loss_<pair>``.
    """

    def __init__(self, pairs: Union[str, Sequence[str]] = ('qk', 'vv'), weight: float = 1.0,
                 chunk_size: Optional[int] = None):
        super().__init__()
        pairs = (pairs,) if isinstance(pairs, str) else tuple(pairs)
        bad = [p for p in pairs if len(p) != 2 or not set(p) <= set('qkv')]
        if bad or not pairs:
            raise ValueError(f'relation pairs must be two letters of q/k/v (e.g. qk, vv, qq, kk), got {pairs!r}')
        if len(set(pairs)) != len(pairs):
            raise ValueError(f'relation pairs repeat: {pairs!r}')
        self.pairs, self.weight, self.chunk_size = pairs, float(weight), chunk_size
        self.outputs = set(''.join(pairs))
        self.loss_names = [f'loss_{p}' for p in pairs]

    def forward(self, student: Taps, teacher: Taps) -> Dict[str, torch.Tensor]:
        return {name: self.weight * relation_kl_loss(student[a], student[b], teacher[a], teacher[b], self.chunk_size)
                for name, (a, b) in zip(self.loss_names, self.pairs)}


def _projection(student_dims: int, teacher_dims: int, project: bool, what: str) -> nn.Module:
    if student_dims == teacher_dims:
        return nn.Identity()
    if not project:
        raise ValueError(f'{what}: the teacher is {teacher_dims} wide and the student {student_dims}; '
                         'set project=True to learn a linear projection student -> teacher')
    proj = nn.Linear(student_dims, teacher_dims)
    nn.init.xavier_uniform_(proj.weight)
    nn.init.zeros_(proj.bias)
    return proj


def _check_loss(loss: str, allowed: Sequence[str], what: str) -> str:
    if loss not in allowed:
        raise ValueError(f'{what}: unknown loss {loss!r}; choose from {tuple(allowed)}')
    return loss


class FeatureTarget(nn.Module):
    """Feature distillation of one tapped tensor of the distilled blocks.

    ``feature``: 'block' (F_i), 'attn' (Ĥ_i), 'ffn' (H̃_i), or 'q'/'k'/'v'
    (heads merged back to (B, N, C)). The student's feature goes through a
    linear projection when the widths differ. Loss ``loss_feat_<feature>``.
    """

    def __init__(self, feature: str, student_dims: int, teacher_dims: int, loss: str = 'smooth_l1',
                 weight: float = 1.0, project: bool = True, beta: float = 1.0):
        super().__init__()
        if feature not in FEATURE_TAPS:
            raise ValueError(f'unknown feature target {feature!r}; choose from {FEATURE_TAPS}')
        self.feature, self.weight, self.beta = feature, float(weight), beta
        self.loss = _check_loss(loss, ('smooth_l1', 'cosine'), f'feature target {feature!r}')
        self.proj = _projection(student_dims, teacher_dims, project, f'feature target {feature!r}')
        self.outputs = {feature}
        self.loss_names = [f'loss_feat_{feature}']

    def forward(self, student: Taps, teacher: Taps) -> Dict[str, torch.Tensor]:
        pred = self.proj(as_tokens(student[self.feature]))
        return {self.loss_names[0]: self.weight * feature_loss(pred, as_tokens(teacher[self.feature]),
                                                               self.loss, self.beta)}


class ClsTarget(nn.Module):
    """CLS-token distillation on both models' CLS token after the final norm.

    The paper compares the final CLS features with "a loss function" ``l``.
    Here the default ``loss='kl'`` is KL(softmax(c_t) ‖ softmax(c_s W)) over
    the channels (the student projected to the teacher's width when they
    differ); ``'smooth_l1'`` and ``'cosine'`` compare the features directly.
    Loss ``loss_cls``. Needs the whole student, so no block stays frozen.
    """

    outputs = {CLS_OUTPUT}

    def __init__(self, student_dims: int, teacher_dims: int, loss: str = 'kl', weight: float = 1.0,
                 project: bool = True, beta: float = 1.0):
        super().__init__()
        self.loss = _check_loss(loss, FEATURE_LOSSES, 'cls target')
        self.weight, self.beta = float(weight), beta
        self.proj = _projection(student_dims, teacher_dims, project, 'cls target')
        self.loss_names = ['loss_cls']

    def forward(self, student: Taps, teacher: Taps) -> Dict[str, torch.Tensor]:
        return {'loss_cls': self.weight * feature_loss(self.proj(student['cls']), teacher['cls'], self.loss, self.beta)}


TARGET_TYPES = ('relation', 'feature', 'cls')


def build_target(cfg: dict, student_dims: int, teacher_dims: int, relation_chunk_size: Optional[int]) -> nn.Module:
    """One target module from a config entry such as ``dict(type='relation', pairs=('qk', 'vv'))``."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    try:
        if kind == 'relation':
            cfg.setdefault('chunk_size', relation_chunk_size)
            return RelationTarget(**cfg)
        if kind == 'feature':
            if 'feature' not in cfg:
                raise ValueError(f"a feature target needs feature= one of {FEATURE_TAPS}")
            return FeatureTarget(student_dims=student_dims, teacher_dims=teacher_dims, **cfg)
        if kind == 'cls':
            return ClsTarget(student_dims=student_dims, teacher_dims=teacher_dims, **cfg)
    except TypeError as err:  # unknown keyword in the config entry
        raise ValueError(f'target {dict(type=kind, **cfg)}: {err}') from err
    raise ValueError(f'unknown target type {kind!r} in {dict(type=kind, **cfg)}; choose from {TARGET_TYPES}')


def uses_qkv(outputs) -> bool:
    return bool(set(outputs) & set(QKV_OUTPUTS))
