"""TinyMIM relation distillation and small-ViT semantic segmentation on OpenMMLab 2.0.

Importing the package registers its modules into mmsegmentation's registries
(configs use ``default_scope='mmseg'`` and ``custom_imports=dict(imports=['tinymim'])``).
"""
from .utils import register_mmengine_safe_globals
from .version import __version__

register_mmengine_safe_globals()

from . import datasets, deploy, engine, models  # noqa: E402,F401  (registers modules)

__all__ = ['__version__']
