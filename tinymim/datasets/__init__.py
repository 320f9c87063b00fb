from .ade20k import TinyMIMADE20KDataset
from .synthetic_ade import make_synthetic_ade20k
from .transforms import ValidateSegLabels
from .two_view_transforms import LoadImageRGB, PackTwoViewInputs, RandomResizedCropFlip, StudentColorJitter
from .unlabeled import UnlabeledImageDataset

__all__ = ['TinyMIMADE20KDataset', 'ValidateSegLabels', 'make_synthetic_ade20k', 'UnlabeledImageDataset',
           'LoadImageRGB', 'RandomResizedCropFlip', 'StudentColorJitter', 'PackTwoViewInputs']
