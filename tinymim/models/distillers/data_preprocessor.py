"""Normalises the teacher and student views of a distillation batch."""
from typing import Optional, Sequence

from mmengine.model import ImgDataPreprocessor
from mmseg.registry import MODELS

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class TwoViewDataPreprocessor(ImgDataPreprocessor):
    """``ImgDataPreprocessor`` applied to each view of ``inputs=dict(teacher=, student=)``.

    Views arrive as uint8 RGB (stacked by ``default_collate`` or as lists);
    they are moved to the device first and normalised there. A plain tensor
    or list of tensors (one view for both models) is handled as one view.
    """

    def __init__(self, mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                 std: Optional[Sequence[float]] = IMAGENET_STD, **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if not isinstance(inputs, dict):
            return super().forward(data, training)
        views = {name: super(TwoViewDataPreprocessor, self).forward(dict(inputs=view), training)['inputs']
                 for name, view in inputs.items()}
        return dict(inputs=views, data_samples=data.get('data_samples'))
