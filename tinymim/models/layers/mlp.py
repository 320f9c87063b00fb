"""The ViT feed-forward block (timm's ``Mlp`` names: ``fc1``, ``fc2``) with
a leaner backward.

Plain autograd keeps both the hidden pre-activation ``h = fc1(x)`` (for
GELU's backward) and ``gelu(h)`` (for fc2's weight gradient): two
B×N×4C tensors per block, the largest activations of a ViT. Here fc2 and
GELU (and the block's layer scale) are one autograd function that keeps
``h`` alone and recomputes ``gelu(h)`` in backward (``recompute_linear``):
one B×N×4C tensor fewer per block, for one extra element-wise GELU
(measured savings: docs/performance.md).

Ours rather than timm's ``Mlp`` (same parameter names) for that backward and
for the block's norm and layer scale it takes to fuse.
"""
from typing import Optional

import torch
import torch.nn as nn

from .layernorm_linear import layernorm_linear
from .recompute_linear import recompute_linear


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, timm's parameter names.

    The recomputing backward runs whenever autograd records and there is no
    dropout between GELU and fc2 (dropout needs the activation itself).
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, norm: Optional[nn.LayerNorm] = None,
                gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The MLP of ``x`` (of ``norm(x)`` when given: the block's LN2, fused
        with fc1, see ``layernorm_linear``), times the layer scale ``gamma`` when
        given (inside fc2's recomputing backward; dropout commutes with it)."""
        h = self.fc1(x) if norm is None else layernorm_linear(x, norm, self.fc1)
        if torch.is_grad_enabled() and not (self.training and self.drop1.p):
            return self.drop2(recompute_linear(h, self.fc2.weight, self.fc2.bias, gamma, gelu=True))
        out = self.drop2(self.fc2(self.drop1(self.act(h))))
        return out if gamma is None else out * gamma
