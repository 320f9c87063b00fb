from .data_preprocessor import TwoViewDataPreprocessor
from .targets import DISTILL_TARGETS, ClsTarget, DistillTarget, FeatureTarget, RelationTarget, build_target
from .tinymim_distiller import TinyMIMDistiller

__all__ = ['DISTILL_TARGETS', 'ClsTarget', 'DistillTarget', 'FeatureTarget', 'RelationTarget', 'TinyMIMDistiller',
           'TwoViewDataPreprocessor', 'build_target']
