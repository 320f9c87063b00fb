"""EncoderDecoder whose neck and head widths follow the ViT backbone."""
import copy
from typing import Optional

from mmseg.models import EncoderDecoder
from mmseg.registry import MODELS

from ..vit import VisionTransformer, resolve_arch

# Necks that keep the backbone's width on every level (so the heads see it too).
WIDTH_PRESERVING_NECKS = ('Feature2Pyramid',)


def backbone_width(backbone: dict) -> Optional[int]:
    """embed_dims of a ViT backbone config (None for other backbones)."""
    cls = MODELS.get(backbone['type']) if isinstance(backbone.get('type'), str) else backbone.get('type')
    if not (isinstance(cls, type) and issubclass(cls, VisionTransformer)):
        return None
    return resolve_arch(backbone.get('arch', 'base'))['embed_dims']


@MODELS.register_module()
class ViTEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` for ViT backbones, checked at build time.

    - ``neck.embed_dim`` and the heads' ``in_channels`` left as ``None`` are
      set to the backbone's width, so ``model.backbone.arch=small`` is all a
      swap needs (the head's own ``channels`` is a separate choice).
    - Values that are set must match the backbone; a mismatch fails here,
      naming both numbers, instead of as a shape error in the first forward.
    - ``pretrained=PATH`` becomes ``backbone.init_cfg=dict(type='Pretrained',
      checkpoint=PATH)``, which loads every checkpoint format the ViT knows
      (MAE, TinyMIM, timm, mmseg, distillation work_dirs checkpoints).
    """

    def __init__(self, backbone: dict, decode_head: dict, neck: Optional[dict] = None,
                 auxiliary_head: Optional[dict] = None, pretrained: Optional[str] = None, **kwargs):
        backbone, decode_head = copy.deepcopy(backbone), copy.deepcopy(decode_head)
        neck, auxiliary_head = copy.deepcopy(neck), copy.deepcopy(auxiliary_head)
        if pretrained is not None:
            if backbone.get('init_cfg'):
                raise ValueError(f'both model.pretrained ({pretrained}) and model.backbone.init_cfg '
                                 f'({backbone["init_cfg"]}) are set; keep one')
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        width = backbone_width(backbone)
        if width is not None:
            heads_see_width = neck is None or neck.get('type') in WIDTH_PRESERVING_NECKS
            if neck is not None and neck.get('type') in WIDTH_PRESERVING_NECKS:
                neck['embed_dim'] = self._match(neck.get('embed_dim'), width, 'neck.embed_dim')
            heads = {'decode_head': decode_head}
            if isinstance(auxiliary_head, list):
                heads.update((f'auxiliary_head[{i}]', h) for i, h in enumerate(auxiliary_head))
            elif auxiliary_head is not None:
                heads['auxiliary_head'] = auxiliary_head
            for name, head in heads.items():
                if heads_see_width:
                    if head.get('in_channels') is None and isinstance(head.get('in_index'), (list, tuple)):
                        head['in_channels'] = [None] * len(head['in_index'])  # one entry per level
                    head['in_channels'] = self._match(head.get('in_channels'), width, f'{name}.in_channels')
        super().__init__(backbone, decode_head, neck=neck, auxiliary_head=auxiliary_head, **kwargs)

    @staticmethod
    def _match(value, width: int, key: str):
        """``value`` with ``None`` entries set to ``width``; other entries must equal it."""
        if isinstance(value, (list, tuple)):
            return type(value)(ViTEncoderDecoder._match(v, width, f'{key}[{i}]') for i, v in enumerate(value))
        if value is None:
            return width
        if value != width:
            raise ValueError(f'{key} is {value} but the backbone outputs {width} channels; '
                             f'set it to {width} or to None (follow the backbone)')
        return value
