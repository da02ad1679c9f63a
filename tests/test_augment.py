"""The single-spike authors' training augmentations (spikeacc.augment), each step against a
reference written after their transforms (torchvision's RandomPerspective, RandomCrop and
RandomHorizontalFlip, their AddGaussianNoise): the warp, the crop and the flip exactly,
the draws by their frequencies."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeacc import augment


def test_the_homography_takes_the_four_points_where_asked():
    source = augment.image_corners(28, 28).expand(3, 4, 2)
    target = source + torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, -1.0]])
    coefficients = augment.homography(source, target)
    a, b = coefficients[:, :6].view(3, 2, 3), coefficients[:, 6:]
    points = torch.cat([source, torch.ones(3, 4, 1, dtype=torch.float64)], dim=-1)  # [B, 4, 3]
    mapped = points @ a.transpose(1, 2) / (source @ b.unsqueeze(-1) + 1.0)
    torch.testing.assert_close(mapped, target, rtol=0, atol=1e-12)


def test_unmoved_corners_leave_the_image_and_a_shift_of_all_corners_translates_it():
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64)
    corners = augment.image_corners(9, 9).expand(2, 4, 2)
    torch.testing.assert_close(augment.perspective(x, corners), x, rtol=0, atol=1e-12)
    moved = augment.perspective(x, corners + torch.tensor([1.0, 0.0], dtype=torch.float64))  # every corner 1 right
    torch.testing.assert_close(moved[..., 1:], x[..., :-1], rtol=0, atol=1e-12)
    assert torch.equal(moved[..., 0], torch.zeros_like(moved[..., 0]))  # zeros come in


def test_corners_move_inward_by_whole_pixels_up_to_the_distortion():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1, 28, 28)
    moves = (augment.perspective_corners(x, 0.4) - augment.image_corners(28, 28)).abs()
    assert set(moves.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}  # int(0.4 * 14) = 5
    inward = augment.perspective_corners(x, 0.1) - augment.image_corners(28, 28)
    assert (inward[:, 0] >= 0).all() and (inward[:, 2] <= 0).all()
    assert inward.abs().mean().item() == pytest.approx(0.5, abs=0.02)  # 0 or 1, evenly


def test_shift_is_the_crop_of_the_zero_padded_image():
    torch.manual_seed(1)
    x = torch.rand(6, 2, 7, 7)
    rows, columns = augment.crop_offsets(x, 2)
    padded = F.pad(x, (2, 2, 2, 2))
    expected = torch.stack([padded[b, :, 2 + r:2 + r + 7, 2 + c:2 + c + 7] for b, (r, c) in
                            enumerate(zip(rows.tolist(), columns.tolist()))])
    assert torch.equal(augment.shift(x, rows, columns), expected)


def test_each_step_happens_as_often_as_the_authors_transforms():
    torch.manual_seed(2)
    x = torch.rand(8000, 1, 4, 4) * 0.5 + 0.25
    assert augment.chosen(x, 0.3).float().mean().item() == pytest.approx(0.3, abs=0.02)
    rows, _ = augment.crop_offsets(x, 1)
    assert torch.bincount(rows + 1).float().div(len(rows)).tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    noisy = augment.add_noise(x, 0.5, 0.05)
    changed = (noisy != x).flatten(1).any(1)
    assert changed.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert (noisy - x)[changed].std().item() == pytest.approx(0.05 / 3 ** 0.5, rel=0.1)  # s ~ U(0, 0.05)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_the_pipelines_keep_images_in_range_and_shape():
    torch.manual_seed(3)
    x = torch.rand(64, 1, 28, 28)
    for name in augment.AUGMENTATIONS:
        out = augment.get(name)(x)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    flipped = augment.Augmentation(0.0, 0.0, True, 0, p_noise=0.0)(x)
    same = (flipped == x).flatten(1).all(1)
    assert torch.equal(flipped[~same], x[~same].flip(-1)) and 0.3 < same.float().mean() < 0.7
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        augment.get("mixup")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augment.get("single-spike-fmnist")(torch.rand(3, 784))
