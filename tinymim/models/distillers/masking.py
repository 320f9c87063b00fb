"""MAE random masking of the student's input, one of the TinyMIM paper's
input ablations: the student sees a masked image while the teacher sees it
whole (the paper's recipe keeps the raw image: ``mask_ratio=0``)."""
from typing import Dict

import torch


def random_token_index(batch: int, num_patches: int, mask_ratio: float, device) -> torch.Tensor:
    """MAE random masking: the (B, K) patch indices kept, K = int(L * (1 - ratio)), sorted."""
    keep = max(1, int(num_patches * (1 - mask_ratio)))
    noise = torch.rand(batch, num_patches, device=device)
    return noise.argsort(dim=1)[:, :keep].sort(dim=1).values


def keep_tokens(taps: Dict[str, torch.Tensor], token_index: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Restrict teacher taps to CLS + the student's kept patches, so both
    relations are over the same token set (softmax over the kept keys).
    The final-norm CLS token ('cls', (B, C)) passes through."""
    index = torch.cat([token_index.new_zeros(token_index.shape[0], 1), token_index + 1], dim=1)
    out = {}
    for name, x in taps.items():
        if name == 'cls':
            out[name] = x
            continue
        if x.dim() == 4:  # (B, heads, N, d)
            out[name] = torch.gather(x, 2, index[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
        else:  # (B, N, C)
            out[name] = torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))
    return out
