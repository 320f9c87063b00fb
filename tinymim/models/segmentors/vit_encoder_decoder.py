"""EncoderDecoder whose neck and head widths follow the ViT backbone, and whose
load path converts reference checkpoints and refuses partial loads."""
import copy
import inspect
from typing import List, Optional

from mmseg.models import EncoderDecoder
from mmseg.registry import MODELS

from ..backbones.tinymim_vit import TinyMIMViT, level_channels
from ..vit import VisionTransformer, resolve_arch
from .segmentor_checkpoint import convert_segmentor_state_dict

# Necks that keep the backbone's width on every level (so the heads see it too).
WIDTH_PRESERVING_NECKS = ('Feature2Pyramid',)
# Necks with in_channels (one per backbone map) and one out_channels for every level.
PYRAMID_NECKS = ('ViTPyramidNeck',)


def _backbone_class(backbone: dict):
    return MODELS.get(backbone['type']) if isinstance(backbone.get('type'), str) else backbone.get('type')


def backbone_width(backbone: dict) -> Optional[int]:
    """embed_dims of a ViT backbone config (None for other backbones)."""
    cls = _backbone_class(backbone)
    if not (isinstance(cls, type) and issubclass(cls, VisionTransformer)):
        return None
    return resolve_arch(backbone.get('arch', 'base'))['embed_dims']


def backbone_levels(backbone: dict) -> Optional[List[int]]:
    """Channels of each map a ``TinyMIMViT`` config returns (None for other backbones)."""
    cls = _backbone_class(backbone)
    if not (isinstance(cls, type) and issubclass(cls, TinyMIMViT)):
        return None
    arch = resolve_arch(backbone.get('arch', 'base'))
    out_indices = backbone.get('out_indices', inspect.signature(cls).parameters['out_indices'].default)
    return level_channels(arch['embed_dims'], arch['num_layers'], out_indices, backbone.get('last_proj_dims'))


@MODELS.register_module()
class ViTEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` for ViT backbones, checked at build time.

    - The widths left as ``None`` follow the backbone: ``Feature2Pyramid``'s
      ``embed_dim``, ``ViTPyramidNeck``'s ``in_channels`` (one per map; the
      TinyMIM*-T projection makes the last one wider), and the heads'
      ``in_channels``, which see the neck's output width (``ViTPyramidNeck``'s
      ``out_channels``; the backbone's maps without a neck). So
      ``model.backbone.arch=small`` is all a swap needs (the head's own
      ``channels`` is a separate choice).
    - Values that are set must match; a mismatch fails here, naming both
      numbers, instead of as a shape error in the first forward.
    - ``pretrained=PATH`` becomes ``backbone.init_cfg=dict(type='Pretrained',
      checkpoint=PATH)``, which loads every checkpoint format the ViT knows
      (MAE, TinyMIM, timm, mmseg, distillation work_dirs checkpoints).
    - Checkpoints loaded into the whole model (``load_from``, ``tools/test.py``,
      ``mmseg.apis.init_model``, resuming) pass through
      ``segmentor_checkpoint.convert_segmentor_state_dict`` first, because
      mmengine loads non-strictly: reference (mmseg 0.x) segmentation files
      are converted, and a segmentor checkpoint that does not fit fails
      naming the keys instead of loading in part.
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
            levels = backbone_levels(backbone) or [width] * 4
            seen = self._neck_widths(neck, width, levels)
            heads = {'decode_head': decode_head}
            if isinstance(auxiliary_head, list):
                heads.update((f'auxiliary_head[{i}]', h) for i, h in enumerate(auxiliary_head))
            elif auxiliary_head is not None:
                heads['auxiliary_head'] = auxiliary_head
            for name, head in heads.items():
                if seen is None:
                    continue
                index = head.get('in_index', -1)  # mmseg's BaseDecodeHead default
                expected = [seen[i] for i in index] if isinstance(index, (list, tuple)) else seen[index]
                if head.get('in_channels') is None and isinstance(index, (list, tuple)):
                    head['in_channels'] = [None] * len(index)  # one entry per level
                head['in_channels'] = self._match(head.get('in_channels'), expected, f'{name}.in_channels',
                                                  'the neck' if neck is not None else 'the backbone')
        super().__init__(backbone, decode_head, neck=neck, auxiliary_head=auxiliary_head, **kwargs)
        self.register_load_state_dict_pre_hook(convert_segmentor_state_dict)

    @classmethod
    def _neck_widths(cls, neck: Optional[dict], width: int, levels: List[int]) -> Optional[List[int]]:
        """Fill and check the neck's input widths; the widths the heads see (None: unknown neck)."""
        if neck is None:
            return levels
        if neck.get('type') in WIDTH_PRESERVING_NECKS:
            if len(set(levels)) > 1:
                raise ValueError(f'{neck["type"]} keeps one width on every level, but the backbone outputs '
                                 f'{levels} channels; use ViTPyramidNeck, which projects each level')
            neck['embed_dim'] = cls._match(neck.get('embed_dim'), width, 'neck.embed_dim', 'the backbone')
            return [width] * len(neck.get('rescales', levels))
        if neck.get('type') in PYRAMID_NECKS:
            in_channels = neck.get('in_channels')
            neck['in_channels'] = cls._match([None] * len(levels) if in_channels is None else in_channels,
                                             levels, 'neck.in_channels', 'the backbone')
            neck['out_channels'] = neck.get('out_channels') or levels[0]
            return [neck['out_channels']] * len(levels)
        return None

    @staticmethod
    def _match(value, expected, key: str, source: str):
        """``value`` with ``None`` entries set from ``expected`` (an int, or one per entry); other entries
        must equal it."""
        if isinstance(value, (list, tuple)):
            if isinstance(expected, (list, tuple)) and len(expected) != len(value):
                raise ValueError(f'{key} has {len(value)} entries but {source} outputs {len(expected)} maps '
                                 f'({list(expected)} channels)')
            return type(value)(ViTEncoderDecoder._match(
                v, expected[i] if isinstance(expected, (list, tuple)) else expected, f'{key}[{i}]', source)
                for i, v in enumerate(value))
        if isinstance(expected, (list, tuple)):
            raise ValueError(f'{key} is {value} but {source} outputs {len(expected)} maps ({list(expected)} '
                             'channels); give one value per map or None (follow it)')
        if value is None:
            return expected
        if value != expected:
            raise ValueError(f'{key} is {value} but {source} outputs {expected} channels; '
                             f'set it to {expected} or to None (follow {source})')
        return value
