from .feature_loss import FEATURE_LOSSES, feature_loss
from .relation_loss import RelationKL, relation_kl_loss, relation_matrix

__all__ = ['FEATURE_LOSSES', 'RelationKL', 'feature_loss', 'relation_kl_loss', 'relation_matrix']
