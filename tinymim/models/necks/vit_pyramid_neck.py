"""The simple feature pyramid of BEiT/MAE segmentation, with a chosen output width."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS

# Reference segmentation checkpoints (mmseg 0.x) keep the pyramid in the
# backbone as fpn1..fpn4; these are the modules that hold those weights here.
# The first two are also mmseg Feature2Pyramid's names (its other two levels have no weights).
REFERENCE_LEVELS = {'fpn1': 'upsample_4x', 'fpn2': 'upsample_2x', 'fpn3': 'project_1x', 'fpn4': 'downsample_2x'}


@MODELS.register_module()
class ViTPyramidNeck(BaseModule):
    """Four ViT maps at stride 16 -> strides 4, 8, 16, 32 with ``out_channels`` each.

    - x4: ConvTranspose 2x2 (``in -> mid``) -> norm -> GELU -> ConvTranspose 2x2 (``mid -> out``);
    - x2: ConvTranspose 2x2 (``in -> out``);
    - x1: identity when ``in == out`` (unless ``project_1x``), else a 1x1 convolution;
    - x0.5: 2x2 max pooling when ``in == out``, else a 3x3 convolution with stride 2.

    With ``out_channels`` equal to the ViT's width this is mmseg's
    ``Feature2Pyramid`` (rescales ``[4, 2, 1, 0.5]``), with the same weight
    names. Wider, it is the pyramid of the reference TinyMIM*-T segmentation
    model (``mid = 2 x in`` by default): ViT-T's 192-channel maps (and its
    1280-channel projected last map) become 768-channel levels for the same
    UPerHead as ViT-B's.

    Args:
        in_channels: channels of the four input maps (``ViTEncoderDecoder``
            fills ``None`` from the backbone).
        out_channels: width of every output level; ``None`` keeps the first
            input's width.
        mid_channels: width between the two transposed convolutions of the
            x4 level; ``None``: ``in`` when ``out == in``, else ``2 x in``.
        project_1x: a 1x1 convolution on the x1 level even when ``in == out``
            (``None``: only when the widths differ).
        norm_cfg: the norm of the x4 level (SyncBN as in mmseg's MAE UperNet).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Optional[int] = None,
                 mid_channels: Optional[int] = None, project_1x: Optional[bool] = None,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        if len(in_channels) != 4 or not all(isinstance(c, int) and c > 0 for c in in_channels):
            raise ValueError(f'ViTPyramidNeck takes four input widths (strides 4, 8, 16, 32), got {in_channels}')
        out = out_channels or in_channels[0]
        c4, c2, c1, c05 = in_channels
        mid = mid_channels or (c4 if c4 == out else 2 * c4)
        self.in_channels, self.out_channels = in_channels, out
        self.upsample_4x = nn.Sequential(
            nn.ConvTranspose2d(c4, mid, kernel_size=2, stride=2),
            build_norm_layer(norm_cfg, mid)[1],
            nn.GELU(),
            nn.ConvTranspose2d(mid, out, kernel_size=2, stride=2))
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(c2, out, kernel_size=2, stride=2))
        if project_1x is None:
            project_1x = c1 != out
        self.project_1x = nn.Conv2d(c1, out, kernel_size=1) if project_1x else nn.Identity()
        # (a Sequential, as in the reference: its weights are downsample_2x.0.*)
        self.downsample_2x = (nn.MaxPool2d(kernel_size=2, stride=2) if c05 == out
                              else nn.Sequential(nn.Conv2d(c05, out, kernel_size=3, stride=2, padding=1)))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != 4:
            raise ValueError(f'ViTPyramidNeck needs 4 backbone maps, got {len(inputs)}; set the backbone\'s '
                             'out_indices to four blocks')
        ops = (self.upsample_4x, self.upsample_2x, self.project_1x, self.downsample_2x)
        return tuple(op(x) for op, x in zip(ops, inputs))
