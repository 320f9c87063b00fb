"""mmseg backbone: the TinyMIM ViT returning 2-D maps of chosen blocks."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmseg.registry import MODELS

from ..vit import VisionTransformer


def resolve_out_indices(out_indices: Union[int, Sequence[int]], num_layers: int) -> Tuple[int, ...]:
    """0-based block indices from mmseg-style ``out_indices``: an int (``-1``
    is the last block) or a sequence; negative entries count from the end."""
    indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
    bad = [i for i in indices if not -num_layers <= i < num_layers]
    if bad or not indices:
        raise ValueError(f'out_indices {bad or indices} are out of range for a ViT with {num_layers} blocks')
    return tuple(i % num_layers for i in indices)


def level_channels(embed_dims: int, num_layers: int, out_indices: Union[int, Sequence[int]],
                   last_proj_dims: Optional[int] = None) -> List[int]:
    """Channels of each map ``TinyMIMViT`` returns: ``embed_dims``, or
    ``last_proj_dims`` for the last block when the model projects it."""
    last = num_layers - 1
    return [last_proj_dims if i == last and last_proj_dims else embed_dims
            for i in resolve_out_indices(out_indices, num_layers)]


@MODELS.register_module()
class TinyMIMViT(VisionTransformer):
    """ViT backbone for mmseg decode heads.

    Returns the outputs of ``out_indices`` (0-based blocks) as a tuple of
    (B, C, H/patch, W/patch) maps; pair it with ``Feature2Pyramid`` or
    ``ViTPyramidNeck`` for UperNet's four scales. The final ``norm`` of a
    distillation or MAE checkpoint is not used (``final_norm=False``), as in
    BEiT/MAE segmentation. With ``last_proj_dims`` (TinyMIM*-T), the last
    block's tokens pass through ``conv1x1`` first, so that map has
    ``last_proj_dims`` channels (``out_channels`` lists them all).

    The output options of mmseg's ``VisionTransformer`` are accepted, so
    mmseg's ViT heads (DPT, Segmenter, SETR) take this backbone unchanged:
    ``out_indices`` may be an int (``-1``: the last block),
    ``output_cls_token=True`` returns ``[map, cls_token]`` per level (with
    ``final_norm``, the last level's CLS token is normalised too), and
    ``with_cls_token`` must be True (the CLS token always takes part in
    attention here). All other arguments are ``VisionTransformer``'s.
    """

    def __init__(self, arch='base', img_size=512, out_indices: Union[int, Sequence[int]] = (3, 5, 7, 11),
                 final_norm: bool = False, output_cls_token: bool = False, with_cls_token: bool = True,
                 **kwargs):
        if not with_cls_token:
            raise ValueError('TinyMIMViT keeps the CLS token in the transformer input (with_cls_token=True); '
                             "mmseg's with_cls_token=False (SETR-MLA) drops it before the blocks, which this "
                             'ViT does not do')
        super().__init__(arch=arch, img_size=img_size, final_norm=final_norm, **kwargs)
        self.out_indices = resolve_out_indices(out_indices, self.num_layers)
        self.output_cls_token = output_cls_token
        self.out_channels = level_channels(self.embed_dims, self.num_layers, self.out_indices, self.last_proj_dims)

    def forward(self, x: torch.Tensor) -> Tuple[Union[torch.Tensor, List[torch.Tensor]], ...]:
        outs = self.forward_blocks(x, self.out_indices)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        maps = []
        for i in self.out_indices:
            tokens = outs[i]
            if i == self.num_layers - 1:
                if self.norm is not None:
                    tokens = self.norm(tokens)
                if self.conv1x1 is not None:
                    tokens = self.conv1x1(tokens)
            fmap = tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(x.shape[0], -1, h, w).contiguous()
            maps.append([fmap, tokens[:, 0]] if self.output_cls_token else fmap)
        return tuple(maps)
