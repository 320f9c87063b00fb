"""TinyMIM relation distillation as an mmengine model (TinyMIM paper).

Block numbers in the config are 1-based, as in the paper ("block 18 of 24");
``teacher_block=18`` is ``blocks[17]``.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmseg.registry import MODELS

from ..losses import relation_matrix
from ..vit import CLS_OUTPUT, VisionTransformer, check_heads
from ..vit_weights import load_vit_checkpoint, summarize_keys
from .masking import keep_tokens, random_token_index
from .targets import Taps, build_target, uses_qkv

DEFAULT_TARGETS = (dict(type='relation', pairs=('qk', 'vv'), weight=1.0),)


def _build_vit(cfg: dict, role: str) -> VisionTransformer:
    try:
        return VisionTransformer(**cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{role}: {err}') from err


def _check_block(block: Optional[int], depth: int, role: str) -> int:
    """A 1-based block number (``None``: the last block) checked against the depth."""
    if block is None:
        return depth
    if not isinstance(block, int) or not 1 <= block <= depth:
        raise ValueError(f'{role}_block={block!r} is not a block of the {role} (blocks are numbered 1..{depth}, '
                         'as in the paper: "block 18 of 24")')
    return block


def _relation_heads(relation_heads: Optional[int], teacher: dict, student: dict, teacher_heads: int) -> int:
    """The distiller's ``relation_heads``, or the one either ViT config sets,
    or the teacher's head count (TinyMIM paper). Settings that differ are an error,
    not a silent choice."""
    given = {name: value for name, value in (('relation_heads', relation_heads),
                                             ('teacher.relation_heads', teacher.get('relation_heads')),
                                             ('student.relation_heads', student.get('relation_heads'))) if value}
    if len(set(given.values())) > 1:
        raise ValueError(f'relation head counts disagree: {given}; set model.relation_heads alone')
    return next(iter(given.values()), teacher_heads)


def _check_fresh_teacher_weights(teacher: VisionTransformer, fresh: Sequence[str], source: str,
                                 with_cls: bool) -> None:
    """A frozen teacher keeps the weights its checkpoint lacks at their initial
    values forever. Accept only those that then change nothing: zero
    relative-bias tables, layer-scale gammas of 1, the fixed sin-cos
    ``pos_embed``, and a final norm no target uses."""
    state = teacher.state_dict()
    harmless = {k for k in fresh
                if (k.endswith('relative_position_bias_table') and not state[k].any())
                or (k.endswith('.gamma') and bool((state[k] == 1).all()))
                or k == 'pos_embed' or (k.startswith('norm.') and not with_cls)}
    changed = [k for k in fresh if k not in harmless]
    if changed:
        raise ValueError(f'teacher: {source} lacks {summarize_keys(changed)}, which would stay at their initial '
                         'values in the frozen teacher and change what it computes; build the teacher as the '
                         'checkpoint was trained (e.g. without layer_scale_init_value, or with final_norm for the '
                         'cls target)')


def _drop_teacher_from_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: the frozen teacher is not saved (it comes from its own file)."""
    for key in [k for k in state_dict if k.startswith(prefix + 'teacher.')]:
        del state_dict[key]
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        for key in [k for k in metadata if k == prefix + 'teacher' or k.startswith(prefix + 'teacher.')]:
            del metadata[key]


def _keep_teacher_on_load(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: the teacher keeps the weights it was built with; any
    teacher entries of the loaded dict are replaced by them."""
    state_dict.update(module.teacher.state_dict(prefix=prefix + 'teacher.'))


@MODELS.register_module()
class TinyMIMDistiller(BaseModel):
    """Distil a frozen teacher ViT into a student ViT (TinyMIM).

    Args:
        teacher: ``VisionTransformer`` arguments plus ``checkpoint`` (required:
            an MAE file, a distillation checkpoint of an earlier step, timm or
            mmseg weights; see ``tinymim.models.vit_weights``).
        student: ``VisionTransformer`` arguments (arch, num_heads, drop path,
            ``pos_embed_type='sincos'``, optionally a Pretrained ``init_cfg``).
        teacher_block / student_block: 1-based numbers of the distilled
            blocks; ``None`` is the last block.
        targets: config dicts, ``type`` a class in ``DISTILL_TARGETS``:
            ``relation`` (pairs of q/k/v), ``feature`` (block/attn/ffn/q/k/v,
            smooth_l1 or cosine), ``cls``, or a user's registered target
            (see ``targets.py``); each declares its taps and named losses.
        relation_heads: heads both sides split Q/K/V into (the relation is
            per head); default the ``relation_heads`` of the teacher or
            student config if one sets it, else the teacher's head count
            (TinyMIM paper).
        mask_ratio: MAE random masking of the student's input; the teacher
            sees the full image and its relations are restricted to the kept
            tokens (and CLS).
        relation_chunk_size: query rows per relation chunk (``None``: all);
            bounds the relation memory in forward and backward.
        compile: ``torch.compile`` both models' ``forward_tap`` (``True`` or
            a dict of ``torch.compile`` options). Meant for GPUs: on CPU it
            did not pay at 224 px (benchmarks/distill_step.py, see
            docs/performance.md).

    The teacher is a submodule (``self.teacher``), so ``.to()``, ``.cuda()``,
    DDP, FSDP and EMA wrappers see it as usual. It is frozen
    (``requires_grad=False``: optimizer constructors skip it and DDP's
    reducer ignores it), ``train()`` keeps it in eval mode, and a state-dict
    hook leaves it out of ``state_dict()``: the checkpoint holds the student
    (and the targets' projections) and names the teacher by the config's
    path, which resuming reloads. Loading keeps the teacher's own weights,
    so student-only checkpoints load strictly.
    """

    def __init__(self, teacher: dict, student: dict, teacher_block: Optional[int] = None,
                 student_block: Optional[int] = None, targets: Sequence[dict] = DEFAULT_TARGETS,
                 relation_heads: Optional[int] = None, mask_ratio: float = 0.,
                 relation_chunk_size: Optional[int] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, compile: Union[bool, dict] = False):
        if data_preprocessor is None:
            data_preprocessor = dict(type='TwoViewDataPreprocessor')
        if isinstance(data_preprocessor, dict):  # BaseModel would look in mmengine's registry only
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
        self.mask_ratio = float(mask_ratio)
        self.teacher_checkpoint = self._teacher_checkpoint(teacher)
        teacher_vit = _build_vit({k: v for k, v in teacher.items() if k != 'checkpoint'}, 'teacher')
        self.student = _build_vit(student, 'student')
        self.teacher_block = _check_block(teacher_block, teacher_vit.num_layers, 'teacher')
        self.student_block = _check_block(student_block, self.student.num_layers, 'student')

        if not targets:
            raise ValueError('targets is empty: give at least one distillation target')
        self.targets = nn.ModuleDict()
        for cfg in targets:
            target = build_target(cfg, student_dims=self.student.embed_dims, teacher_dims=teacher_vit.embed_dims,
                                  relation_chunk_size=relation_chunk_size)
            clash = set(target.loss_names) & {n for t in self.targets.values() for n in t.loss_names}
            if clash:
                raise ValueError(f'targets repeat the losses {sorted(clash)}')
            self.targets['_'.join(n[len('loss_'):] for n in target.loss_names)] = target
        self.outputs = set().union(*(t.outputs for t in self.targets.values()))
        self.with_cls = CLS_OUTPUT in self.outputs
        if self.with_cls and (teacher_vit.norm is None or self.student.norm is None):
            raise ValueError('the cls target uses the CLS token after the final norm; build both ViTs with '
                             'final_norm=True')

        self.relation_heads = _relation_heads(relation_heads, teacher, student, teacher_vit.num_heads)
        if uses_qkv(self.outputs):
            for role, vit in (('teacher', teacher_vit), ('student', self.student)):
                try:
                    check_heads(vit.embed_dims, self.relation_heads, 'relation_heads')
                except ValueError as err:
                    raise ValueError(f'{role}: {err} (relation heads default to the teacher\'s head count)') from err

        teacher_vit.requires_grad_(False)
        teacher_vit.eval()
        loaded = load_vit_checkpoint(teacher_vit, self.teacher_checkpoint)
        _check_fresh_teacher_weights(teacher_vit, loaded['fresh'], self.teacher_checkpoint, self.with_cls)
        self.teacher = teacher_vit
        self.register_state_dict_post_hook(_drop_teacher_from_state_dict)
        self.register_load_state_dict_pre_hook(_keep_teacher_on_load)
        self._configure_student()
        if not isinstance(compile, (bool, dict)):
            raise ValueError(f'compile must be True, False or a dict of torch.compile options (e.g. '
                             f"dict(mode='max-autotune')), got {compile!r}")
        if compile:
            options = compile if isinstance(compile, dict) else {}
            try:
                for vit in (self.student, teacher_vit):
                    vit.forward_tap = torch.compile(vit.forward_tap, **options)
            except TypeError as err:  # an option torch.compile does not take
                raise ValueError(f'compile={compile!r}: {err}') from err

    @staticmethod
    def _teacher_checkpoint(teacher: dict) -> str:
        if 'init_cfg' in teacher:
            raise ValueError('teacher: give the weights as teacher.checkpoint=PATH, not init_cfg')
        path = teacher.get('checkpoint')
        if not path:
            raise ValueError('teacher.checkpoint is required: the teacher is a pre-trained ViT (an MAE file, or the '
                             'checkpoint of the previous distillation step)')
        if '://' not in str(path) and not osp.isfile(path):
            raise FileNotFoundError(f'teacher checkpoint {path} does not exist; set model.teacher.checkpoint=PATH '
                                    '(e.g. --cfg-options model.teacher.checkpoint=...)')
        return str(path)

    def _configure_student(self) -> None:
        """Freeze what the loss never reaches and drop the distilled block's drop path.

        Only the blocks up to ``student_block`` (and of that block only what
        the targets tap) are computed; the rest stays built so checkpoints
        are complete ViTs that load strictly (as the next teacher, or as a
        segmentation backbone), but it is frozen at its initial values, as
        in the reference. ``requires_grad=False`` keeps it out of DDP's
        reducer, so ``find_unused_parameters=False`` works.
        """
        blk = self.student.blocks[self.student_block - 1]
        # The reference distils the last block with drop path 0.
        blk.drop_path1, blk.drop_path2 = nn.Identity(), nn.Identity()
        if self.with_cls:
            return  # the CLS token needs the whole student
        unused: List[nn.Module] = list(self.student.blocks[self.student_block:])
        if self.student.norm is not None:
            unused.append(self.student.norm)
        if not self.outputs & {'attn', 'ffn', 'block'}:
            unused += [blk.attn.proj, blk.ls1]
        if not self.outputs & {'ffn', 'block'}:
            unused += [blk.norm2, blk.mlp]
        if 'block' not in self.outputs:  # H̃ is taken before the layer scale
            unused.append(blk.ls2)
        for module in unused:
            module.requires_grad_(False)
        if blk.attn.window and not self.outputs & {'attn', 'ffn', 'block'}:
            # Q/K/V alone do not run the attention, so its relative position bias gets no gradient.
            blk.attn.relative_position_bias_table.requires_grad_(False)

    def train(self, mode: bool = True):
        """The student's (and targets') mode; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def extra_repr(self) -> str:
        t = self.teacher
        return (f'teacher: ViT {t.embed_dims}x{t.num_layers} from {self.teacher_checkpoint} (frozen, not saved), '
                f'teacher_block={self.teacher_block}, student_block={self.student_block}, '
                f'relation_heads={self.relation_heads}, mask_ratio={self.mask_ratio}')

    # -------------------------------------------------------------- forward
    def _views(self, inputs: Union[torch.Tensor, Dict[str, torch.Tensor]]):
        if isinstance(inputs, dict):
            missing = {'teacher', 'student'} - set(inputs)
            if missing:
                raise KeyError(f'two-view inputs need keys teacher and student; missing {sorted(missing)}')
            teacher_x, student_x = inputs['teacher'], inputs['student']
            if teacher_x.shape != student_x.shape:
                raise ValueError(f'teacher and student views differ in shape: {tuple(teacher_x.shape)} vs '
                                 f'{tuple(student_x.shape)}')
            return teacher_x, student_x
        return inputs, inputs

    def _taps(self, inputs) -> tuple:
        teacher_x, student_x = self._views(inputs)
        token_index = None
        if self.mask_ratio > 0:
            p = self.student.patch_size
            num_patches = (student_x.shape[-2] // p) * (student_x.shape[-1] // p)
            token_index = random_token_index(student_x.shape[0], num_patches, self.mask_ratio, student_x.device)
        outputs = tuple(sorted(self.outputs))
        # no_grad rather than inference_mode: teacher tensors are saved for the
        # relation loss's backward, which inference tensors cannot be.
        with torch.no_grad():
            teacher = self.teacher.forward_tap(teacher_x, self.teacher_block - 1, outputs, self.relation_heads)
        if token_index is not None:
            teacher = keep_tokens(teacher, token_index)
        student = self.student.forward_tap(student_x, self.student_block - 1, outputs, self.relation_heads,
                                           token_index)
        return student, teacher

    def loss(self, inputs) -> Dict[str, torch.Tensor]:
        student, teacher = self._taps(inputs)
        losses = {}
        for target in self.targets.values():
            losses.update(target(student, teacher))
        return losses

    def extract(self, inputs) -> Dict[str, Taps]:
        """Relations (``relation_qk``...), tapped features and CLS tokens of both models."""
        student, teacher = self._taps(inputs)
        pairs = [p for t in self.targets.values() for p in t.relations]
        result = {}
        for role, taps in (('student', student), ('teacher', teacher)):
            result[role] = dict(taps, **{f'relation_{p}': relation_matrix(taps[p[0]], taps[p[1]]) for p in pairs})
        return result

    def forward(self, inputs, data_samples=None, mode: str = 'loss'):
        if mode == 'loss':
            return self.loss(inputs)
        if mode == 'tensor':
            return self.extract(inputs)
        raise ValueError(f"TinyMIMDistiller supports mode='loss' and mode='tensor', got {mode!r} "
                         '(distillation has no predictions to evaluate)')
