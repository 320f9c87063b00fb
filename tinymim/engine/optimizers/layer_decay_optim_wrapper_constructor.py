"""Layer-wise learning-rate decay that asks the backbone for layer depths."""
from collections import defaultdict
from typing import List

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TinyMIMLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """BEiT/MAE layer-wise lr decay for any backbone with ``get_layer_depth``.

    ``paramwise_cfg=dict(layer_decay_rate=r)``. A parameter gets lr
    ``base_lr * r ** (num_ids - 1 - layer_id)`` where ``(layer_id, num_ids) =
    model.backbone.get_layer_depth(name, prefix='backbone.')``; for a ViT with
    L blocks the embeddings are layer 0, block i is layer i + 1 and num_ids is
    L + 2, so the scale is ``r ** (L + 1 - layer_id)``. The neck and heads are
    outside the backbone prefix and get scale 1.

    Weight decay is 0 for every 1-D parameter (biases, norms, layer scale) and
    for the names in ``backbone.no_weight_decay()`` (``pos_embed``,
    ``cls_token``, relative-bias tables). mmseg 1.2.2's
    ``LayerDecayOptimizerConstructor`` and the reference code decay
    ``pos_embed``, ``cls_token`` and the relative-bias tables: their skip list
    compares ``'pos_embed'`` with ``'backbone.pos_embed'``, which never match.
    ``paramwise_cfg.decay_no_weight_decay_names=True`` reproduces that.
    The per-group table is logged when the optimizer is built.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        others = sorted(set(self.paramwise_cfg) - {'layer_decay_rate', 'decay_no_weight_decay_names'})
        if others:  # the groups below are built from depths alone: these would be ignored
            raise ValueError(f'{type(self).__name__} takes only paramwise_cfg.layer_decay_rate and '
                             'decay_no_weight_decay_names (depths come from backbone.get_layer_depth, weight decay '
                             'is 0 for 1-D parameters and backbone.no_weight_decay()); it cannot apply '
                             f'{others}')
        self.decay_skip_names = bool(self.paramwise_cfg.get('decay_no_weight_decay_names', False))
        rate = self.paramwise_cfg.get('layer_decay_rate')
        if rate is None or not 0 < rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate}')
        self.layer_decay_rate = rate

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        model = module.module if is_model_wrapper(module) else module
        backbone = getattr(model, 'backbone', None)
        if not callable(getattr(backbone, 'get_layer_depth', None)):
            raise TypeError(f'{type(self).__name__} needs model.backbone.get_layer_depth(name, prefix); '
                            f'{type(backbone).__name__} has none')
        rate = self.layer_decay_rate
        no_decay = set() if self.decay_skip_names else {
            'backbone.' + n for n in getattr(backbone, 'no_weight_decay', set)()}
        groups = defaultdict(lambda: dict(params=[], param_names=[]))
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer_id, num_ids = backbone.get_layer_depth(name, prefix='backbone.')
            decay = param.ndim > 1 and name not in no_decay
            group = groups[(layer_id, decay)]
            if not group['params']:
                scale = rate ** (num_ids - 1 - layer_id)
                group.update(lr=self.base_lr * scale, lr_scale=scale, layer_id=layer_id,
                             weight_decay=(self.base_wd or 0.) if decay else 0.,
                             group_name=f'layer_{layer_id}_{"decay" if decay else "no_decay"}')
            group['params'].append(param)
            group['param_names'].append(name)
        ordered = [groups[key] for key in sorted(groups)]
        params.extend(ordered)
        print_log(self.format_table(ordered, rate), logger='current')

    @staticmethod
    def format_table(groups: List[dict], rate: float) -> str:
        lines = [f'layer-wise lr decay, rate {rate}:',
                 f'{"group":<22}{"tensors":>8}{"params":>12}{"lr scale":>11}{"lr":>11}{"wd":>7}  first tensor']
        for g in groups:
            numel = sum(p.numel() for p in g['params'])
            lines.append(f'{g["group_name"]:<22}{len(g["params"]):>8}{numel:>12,}{g["lr_scale"]:>11.4g}'
                         f'{g["lr"]:>11.3g}{g["weight_decay"]:>7.3g}  {g["param_names"][0]}')
        return '\n'.join(lines)
