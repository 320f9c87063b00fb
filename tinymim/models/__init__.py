from .backbones import TinyMIMViT
from .vit import ARCH_ZOO, VisionTransformer

__all__ = ['ARCH_ZOO', 'TinyMIMViT', 'VisionTransformer']
