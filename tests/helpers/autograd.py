"""What autograd keeps for backward (the probe of the memory tests: lean MLP,
fused norm/linear, lean layer scale, chunked attention, relation loss), and
what it computes (gradients compared with a reference's, per parameter)."""
import torch


def saved_tensors(fn):
    """``fn()`` and the tensors autograd saved for backward while it ran."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def param_grads(model) -> dict:
    """The gradients a backward left on ``model``'s parameters, by name (copies)."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_grads_agree(grads: dict, ref: dict, min_cos: float = 0.99, max_norm_diff: float = 0.02) -> None:
    """Every parameter's gradient points the way ``ref``'s does (cosine similarity
    >= ``min_cos``) and has its length (|‖g‖/‖ref‖ - 1| <= ``max_norm_diff``).

    The cosine alone misses a gradient that is scaled (loss scaling applied
    twice, a dropped 1/(1-p)); the norm alone misses one that points elsewhere.
    """
    assert grads.keys() == ref.keys(), (sorted(set(grads) ^ set(ref)))
    bad = []
    for name, r in ref.items():
        g, r = grads[name].double().flatten(), r.double().flatten()
        cos = torch.nn.functional.cosine_similarity(g, r, dim=0, eps=1e-30).item()
        norm_diff = abs(g.norm().item() / r.norm().item() - 1) if r.norm() > 0 else float(g.norm() > 0)
        if not (cos >= min_cos and norm_diff <= max_norm_diff):
            bad.append(f'{name}: cosine {cos:.6f}, norm ratio - 1 = {norm_diff:.2e}')
    assert not bad, 'gradients disagree with the reference:\n' + '\n'.join(bad)
