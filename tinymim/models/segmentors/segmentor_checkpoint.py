"""Checkpoints loaded into a whole segmentor: converted in the model's own load path.

mmengine loads ``load_from`` / ``tools/test.py`` / ``mmseg.apis.init_model``
checkpoints with ``strict=False``: it logs a warning for keys that do not
fit and loads the rest, so a file in another layout silently gives a
half-loaded model. ``ViTEncoderDecoder`` registers
``convert_segmentor_state_dict`` as a load-state-dict pre-hook, which runs
inside any loader (mmengine's, torch's) before the weights are copied:

* a **segmentor checkpoint** (``backbone.*`` next to ``neck.*`` /
  ``decode_head.*``) has its backbone converted like any ViT checkpoint
  (``tinymim.models.vit_weights``: mmseg MAE/BEiT/ViT keys, BEiT-style
  ``gamma_1``, resized position tables). The reference TinyMIM segmentation
  code (mmseg 0.x) keeps the pyramid inside the backbone as ``fpn1..fpn4``;
  those weights move to the neck. Then every backbone, neck and decode-head
  weight of the model must arrive with its shape, or loading fails naming
  the keys. Only a missing auxiliary head (used in training only) is allowed,
  and logged.
* a **ViT checkpoint** given to the whole segmentor (an official
  MAE/TinyMIM file, a distillation checkpoint) loads into the backbone as
  ``pretrained`` would; the neck and heads keep their weights, and the log
  says so.
"""
import logging
import re
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log

from ..necks.vit_pyramid_neck import REFERENCE_LEVELS
from ..vit_weights import prepare_vit_state_dict, summarize_keys

SEGMENTOR_PARTS = ('backbone.', 'neck.', 'decode_head.', 'auxiliary_head.')
REFERENCE_PYRAMID = re.compile(r'^(fpn[1-4])\.(.+)$')


class SegmentorCheckpointError(ValueError):
    """A segmentor checkpoint that does not fit the model."""


def convert_segmentor_state_dict(module: torch.nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook of ``ViTEncoderDecoder``: rewrites ``state_dict`` in place."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = {k[len(prefix):]: state_dict[k] for k in keys}
    if not local:
        return
    converted, message = segmentor_state_dict(module, local)
    for key in keys:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in converted.items()})
    if message:
        print_log(message, logger='current', level=logging.WARNING if 'keep their' in message else logging.INFO)


def is_segmentor_state(local: dict) -> bool:
    return (all(torch.is_tensor(v) for v in local.values())
            and any(k.startswith(SEGMENTOR_PARTS[1:]) for k in local) and any(k.startswith('backbone.') for k in local))


def segmentor_state_dict(model: torch.nn.Module, local: dict) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights of ``local`` (a loaded state dict or checkpoint) under the
    model's own names, and a log line (empty when nothing was converted)."""
    if not is_segmentor_state(local):
        return _from_vit_checkpoint(model, local)
    backbone = {k[len('backbone.'):]: v for k, v in local.items() if k.startswith('backbone.')}
    others = {k: v for k, v in local.items() if not k.startswith('backbone.')}
    moved = []
    for key in [k for k in backbone if REFERENCE_PYRAMID.match(k)]:
        level, rest = REFERENCE_PYRAMID.match(key).groups()
        others[f'neck.{REFERENCE_LEVELS[level]}.{rest}'] = backbone.pop(key)
        moved.append('backbone.' + key)
    prepared = prepare_vit_state_dict(model.backbone, backbone, 'the segmentor checkpoint\'s backbone',
                                      fresh_by_design=False, strict=False)
    converted = {'backbone.' + k: v for k, v in prepared.state_dict.items()}
    target = model.state_dict()
    missing = ['backbone.' + k for k in prepared.missing]
    unexpected = ['backbone.' + k for k in prepared.unexpected]
    has_aux = any(k.startswith('auxiliary_head.') for k in others)
    skipped = []
    for key, value in target.items():
        if key.startswith('backbone.') or key in others:
            continue
        if key.endswith('num_batches_tracked') or (key.startswith('auxiliary_head.') and not has_aux):
            converted[key] = value  # kept as the model has it
            skipped.append(key)
        else:
            missing.append(key)
    unexpected += [k for k in others if k not in target]
    mismatched = [f'{k}: checkpoint {tuple(others[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in target.items() if k in others and others[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise SegmentorCheckpointError(_misfit_message(missing, unexpected, mismatched, moved))
    converted.update(others)
    changed = backbone.keys() != prepared.state_dict.keys() or moved or prepared.notes
    if not changed and not skipped:
        return converted, ''
    parts = [f'Segmentor checkpoint [backbone: {prepared.format}]: backbone {prepared.summary()}']
    if moved:
        parts.append(f'moved the reference pyramid ({_pyramid(moved)}) to the neck')
    aux = [k for k in skipped if k.startswith('auxiliary_head.')]
    if aux:
        parts.append(f'no auxiliary head in the checkpoint: {summarize_keys(aux)} keep their weights '
                     '(the auxiliary head only trains)')
    return converted, '; '.join(parts)


def _pyramid(moved: List[str]) -> str:
    levels = sorted({k.split('.')[1] for k in moved})
    return f'{", ".join("backbone." + lv for lv in levels)}: {len(moved)} tensors'


def _misfit_message(missing: List[str], unexpected: List[str], mismatched: List[str], moved: List[str]) -> str:
    lines = ['the segmentor checkpoint does not fit the model, so nothing was loaded:']
    if missing:
        lines.append(f'  missing {summarize_keys(missing, limit=6)}: {", ".join(missing[:8])}'
                     + (', ...' if len(missing) > 8 else ''))
    if unexpected:
        lines.append(f'  unexpected {summarize_keys(unexpected, limit=6)}: {", ".join(unexpected[:8])}'
                     + (', ...' if len(unexpected) > 8 else ''))
    if mismatched:
        lines.append(f'  {len(mismatched)} of another shape: {"; ".join(mismatched[:4])}')
    if moved:
        lines.append(f'  (the reference pyramid ({_pyramid(moved)}) was moved to the neck first)')
    lines.append('  build the model with the config the checkpoint was trained with (backbone arch and options, '
                 'neck and head widths)')
    return '\n'.join(lines)


def _from_vit_checkpoint(model: torch.nn.Module, local: dict) -> Tuple[Dict[str, torch.Tensor], str]:
    """A ViT checkpoint given to the whole segmentor: the backbone loads it as ``pretrained`` would."""
    prepared = prepare_vit_state_dict(model.backbone, local, 'the checkpoint')
    converted = {'backbone.' + k: v for k, v in prepared.state_dict.items()}
    rest = [k for k in model.state_dict() if not k.startswith('backbone.')]
    message = (f'Checkpoint [{prepared.format}] holds a ViT, not a segmentor: loaded into the backbone '
               f'({prepared.summary()}); the neck and heads keep their weights ({summarize_keys(rest)})')
    return converted, message
