from .tinymim_vit import TinyMIMViT

__all__ = ['TinyMIMViT']
