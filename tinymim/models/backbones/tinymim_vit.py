"""mmseg backbone: the TinyMIM ViT returning 2-D maps of chosen blocks."""
from typing import Sequence, Tuple

import torch
from mmseg.registry import MODELS

from ..vit import VisionTransformer


@MODELS.register_module()
class TinyMIMViT(VisionTransformer):
    """ViT backbone for mmseg decode heads.

    Returns the outputs of ``out_indices`` (0-based blocks) as a tuple of
    (B, C, H/patch, W/patch) maps; pair it with ``Feature2Pyramid`` for
    UperNet's four scales. The final ``norm`` of a distillation or MAE
    checkpoint is not used (``final_norm=False``), as in BEiT/MAE
    segmentation. All other arguments are ``VisionTransformer``'s.
    """

    def __init__(self, arch='base', img_size=512, out_indices: Sequence[int] = (3, 5, 7, 11),
                 final_norm: bool = False, **kwargs):
        super().__init__(arch=arch, img_size=img_size, final_norm=final_norm, **kwargs)
        out_indices = [i % self.num_layers if -self.num_layers <= i < self.num_layers else i
                       for i in out_indices]
        bad = [i for i in out_indices if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f'out_indices {bad} are out of range for a ViT with {self.num_layers} blocks')
        self.out_indices = tuple(out_indices)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = self.forward_blocks(x, self.out_indices)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        maps = []
        for i in self.out_indices:
            tokens = outs[i]
            if i == self.num_layers - 1 and self.norm is not None:
                tokens = self.norm(tokens)
            maps.append(tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w).contiguous())
        return tuple(maps)
