from .backbones import TinyMIMViT
from .distillers import TinyMIMDistiller, TwoViewDataPreprocessor  # noqa: F401  (registers modules)
from .necks import ViTPyramidNeck
from .segmentors import ViTEncoderDecoder
from .vit import ARCH_ZOO, VisionTransformer

__all__ = ['ARCH_ZOO', 'TinyMIMViT', 'VisionTransformer', 'ViTEncoderDecoder', 'ViTPyramidNeck']
