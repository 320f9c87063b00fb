"""The fused student colour jitter must do what torchvision's ColorJitter
does with the same factors and order, up to rounding."""
import pytest
import torch
from torchvision.transforms import ColorJitter
from torchvision.transforms import functional as F

from tinymim.datasets.two_view_transforms import StudentColorJitter, color_jitter

OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)


def torchvision_jitter(img, order, factors):
    for op in order:
        if op < 3 and factors[op] is not None:
            img = OPS[op](img, factors[op])
    return img


def test_matches_torchvision_up_to_rounding():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    diffs = []
    for _ in range(100):
        order, *factors, _ = ColorJitter.get_params((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), None)
        ours = color_jitter(img, order.tolist(), *factors)
        ref = torchvision_jitter(img, order.tolist(), factors)
        diffs.append((ours.int() - ref.int()).abs())
    diffs = torch.stack(diffs).float()
    # torchvision truncates to uint8 after each of the three blends, we round once
    assert diffs.max() <= 4 and diffs.mean() < 1.5


def test_single_factor_and_skipped_ops():
    img = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    assert torch.equal(color_jitter(img, [3, 0, 1, 2], 1.3, None, None), torch.full_like(img, 130))
    assert torch.equal(color_jitter(img, [0, 1, 2, 3], None, None, None), img)
    assert torch.equal(color_jitter(img, [0], 3.0, None, None), torch.full_like(img, 255))  # clamped


def test_transform_uses_torchvision_for_hue_and_validates():
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = StudentColorJitter(0., 0., 0., hue=0.3).transform(dict(img=img))['student_img']
    assert out.dtype == torch.uint8 and out.shape == img.shape and not torch.equal(out, img)
    with pytest.raises(ValueError, match='brightness'):
        StudentColorJitter(brightness=-0.1)
