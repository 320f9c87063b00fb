from .data_preprocessor import TwoViewDataPreprocessor
from .targets import ClsTarget, FeatureTarget, RelationTarget
from .tinymim_distiller import TinyMIMDistiller

__all__ = ['ClsTarget', 'FeatureTarget', 'RelationTarget', 'TinyMIMDistiller', 'TwoViewDataPreprocessor']
