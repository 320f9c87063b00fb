"""What ``TinyMIMDistiller`` compares: registered target classes, one module
per config entry of ``targets``.

Each target declares the ``VisionTransformer.forward_tap`` outputs it needs
from both models (``outputs``: 'q'/'k'/'v', 'attn'/'ffn'/'block', and
'cls', the CLS token after the final norm) and maps the tapped tensors to
named losses. Projections that map student features to the teacher's width
are parameters of the target, so they train and are saved with the student.

A new target is a ``DistillTarget`` subclass registered in
``DISTILL_TARGETS`` from the user's own module (loaded with
``custom_imports``), with no change to this package. A registry of its own
rather than mmseg's ``MODELS``: an unknown type then lists only targets, and
the short config names ('relation', 'feature', 'cls') cannot clash with
mmseg's models.
"""
import inspect
from typing import Dict, List, Optional, Sequence, Set, Union

import torch
import torch.nn as nn
from mmengine.registry import Registry

from ..losses import FEATURE_LOSSES, feature_loss, relation_kl_loss
from ..vit import CLS_OUTPUT, FEATURE_OUTPUTS, QKV_OUTPUTS, TAP_OUTPUTS

FEATURE_TAPS = QKV_OUTPUTS + FEATURE_OUTPUTS
DISTILL_TARGETS = Registry('distillation target', scope='tinymim')
# What build_target passes to a target whose __init__ names it.
CONTEXT_ARGS = ('student_dims', 'teacher_dims', 'relation_chunk_size')

Taps = Dict[str, torch.Tensor]


class DistillTarget(nn.Module):
    """Base class of the distillation targets.

    Subclasses set ``outputs`` (the ``forward_tap`` names they need from
    both models; Q/K/V come split into the distiller's relation heads) and
    ``loss_names`` (each starting with ``loss_``), and implement
    ``forward(student_taps, teacher_taps) -> {loss name: tensor}``. Their
    ``__init__`` may take ``student_dims``, ``teacher_dims`` (the two
    widths) and ``relation_chunk_size`` (the distiller's); ``build_target``
    fills those in unless the config entry sets them. ``relations`` lists
    the q/k/v pairs whose relation matrices ``mode='tensor'`` should report.
    """

    outputs: Set[str] = set()
    loss_names: List[str] = []
    relations: Sequence[str] = ()

    def forward(self, student: Taps, teacher: Taps) -> Dict[str, torch.Tensor]:
        raise NotImplementedError(f'{type(self).__name__} must implement forward(student_taps, teacher_taps)')


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) Q/K/V -> (B, N, heads*d); token maps pass through."""
    return x.transpose(1, 2).flatten(2) if x.dim() == 4 else x


@DISTILL_TARGETS.register_module(name=['relation', 'RelationTarget'])
class RelationTarget(DistillTarget):
    """KL between teacher and student relations ``softmax(X Yᵀ/√d)``.

    ``pairs`` are two letters of q/k/v each: 'qk' and 'vv' are TinyMIM's
    default, 'qq' and 'kk' the paper's other relations. Losses are named
    ``loss_<pair>``. ``relation_chunk_size``: query rows per chunk of the
    loss (default the distiller's).
    """

    def __init__(self, pairs: Union[str, Sequence[str]] = ('qk', 'vv'), weight: float = 1.0,
                 relation_chunk_size: Optional[int] = None):
        super().__init__()
        pairs = (pairs,) if isinstance(pairs, str) else tuple(pairs)
        bad = [p for p in pairs if len(p) != 2 or not set(p) <= set('qkv')]
        if bad or not pairs:
            raise ValueError(f'relation pairs must be two letters of q/k/v (e.g. qk, vv, qq, kk), got {pairs!r}')
        if len(set(pairs)) != len(pairs):
            raise ValueError(f'relation pairs repeat: {pairs!r}')
        self.pairs, self.weight, self.chunk_size = pairs, float(weight), relation_chunk_size
        self.relations = pairs
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


@DISTILL_TARGETS.register_module(name=['feature', 'FeatureTarget'])
class FeatureTarget(DistillTarget):
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


@DISTILL_TARGETS.register_module(name=['cls', 'ClsTarget'])
class ClsTarget(DistillTarget):
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


def build_target(cfg: dict, **context) -> DistillTarget:
    """One target from a config entry such as ``dict(type='relation', pairs=('qk', 'vv'))``.

    ``type`` names a class in ``DISTILL_TARGETS``; ``context`` holds the
    ``CONTEXT_ARGS`` values, passed to the keywords the class's ``__init__``
    names (an entry's own value wins).
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    entry = dict(type=kind, **cfg)
    target_cls = DISTILL_TARGETS.get(kind) if isinstance(kind, str) else None
    if not (isinstance(target_cls, type) and issubclass(target_cls, DistillTarget)):
        raise ValueError(f'unknown target type {kind!r} in {entry}; choose from {sorted(DISTILL_TARGETS.module_dict)} '
                         'or register a DistillTarget subclass in DISTILL_TARGETS (tinymim.models.distillers) '
                         'from a module loaded with custom_imports')
    params = inspect.signature(target_cls.__init__).parameters
    kwargs = {k: v for k, v in context.items() if k in params and k not in cfg}
    try:
        target = target_cls(**kwargs, **cfg)
    except TypeError as err:  # an unknown or missing keyword in the config entry
        raise ValueError(f'target {entry}: {err}') from err
    unknown = set(target.outputs) - set(TAP_OUTPUTS)
    if not target.outputs or unknown:
        raise ValueError(f'target {entry} asks for the taps {sorted(target.outputs)}; choose from {TAP_OUTPUTS}')
    if not target.loss_names or not all(n.startswith('loss_') for n in target.loss_names):
        raise ValueError(f'target {entry}: loss_names must be a non-empty list of names starting with "loss_", '
                         f'got {target.loss_names!r}')
    return target


def uses_qkv(outputs) -> bool:
    return bool(set(outputs) & set(QKV_OUTPUTS))
