"""Losses for TinyMIM's feature and CLS-token distillation ablations."""
import torch
import torch.nn.functional as F

FEATURE_LOSSES = ('smooth_l1', 'cosine', 'kl')


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = 'smooth_l1',
                 beta: float = 1.0) -> torch.Tensor:
    """Distance between student and teacher features (..., C), fp32.

    - ``smooth_l1``: element-wise smooth-L1 (``beta``), averaged over all elements;
    - ``cosine``: 1 - cosine similarity over C, averaged over the other axes;
    - ``kl``: KL(softmax(teacher) ‖ softmax(student)) over C, averaged over the other axes.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'feature loss needs equal shapes: student {tuple(student.shape)}, '
                         f'teacher {tuple(teacher.shape)}')
    student, teacher = student.float(), teacher.float()
    if kind == 'smooth_l1':
        return F.smooth_l1_loss(student, teacher, beta=beta)
    if kind == 'cosine':
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == 'kl':
        log_pt = teacher.log_softmax(dim=-1)
        return (log_pt.exp() * (log_pt - student.log_softmax(dim=-1))).sum(-1).mean()
    raise ValueError(f'unknown feature loss {kind!r}; choose from {FEATURE_LOSSES}')
