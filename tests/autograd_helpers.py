"""What autograd keeps for backward: the probe of the memory tests (lean MLP,
fused norm/linear, lean layer scale, chunked attention, relation loss)."""
import torch


def saved_tensors(fn):
    """``fn()`` and the tensors autograd saved for backward while it ran."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved
