"""Losses against hand-computed values, and the Dice loss gradient against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from skiplab.train.losses import Loss, dice_loss


def test_dice_loss_hand_computed():
    # One image of two pixels, two classes, softmax probabilities (0.75, 0.25) and (0.5, 0.5),
    # target (0, 1). Class 0: inter 0.75, sums 1.25 + 1; class 1: inter 0.5, sums 0.75 + 1.
    p = torch.tensor([[0.75, 0.5], [0.25, 0.5]])  # (K, pixels)
    logits = p.log().view(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    d0 = (2 * 0.75 + 1) / (1.25 + 1 + 1)
    d1 = (2 * 0.5 + 1) / (0.75 + 1 + 1)
    assert float(dice_loss(logits, target)) == pytest.approx(1 - (d0 + d1) / 2)
    # Confident and right: loss close to 0.
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, target)) < 1e-6


def test_dice_loss_gradient():
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    assert torch.autograd.gradcheck(lambda z: dice_loss(z, target), (logits,))


def test_cross_entropy_with_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    logp = logits.log_softmax(1)[0]
    eps = 0.1
    expected = -((1 - eps) * logp[0] + eps * logp.mean())
    assert float(Loss("ce", "classification", eps)(logits, target)) == pytest.approx(
        float(expected)
    )


def test_segmentation_sum_loss():
    logits = torch.randn(2, 2, 3, 3)
    target = torch.randint(0, 2, (2, 3, 3))
    ce = torch.nn.functional.cross_entropy(logits, target)
    total = Loss("ce+dice", "segmentation")(logits, target)
    assert math.isclose(float(total), float(ce + dice_loss(logits, target)), rel_tol=1e-6)


def test_loss_rejects_bad_choices():
    with pytest.raises(ValueError, match="segmentation; classification uses 'ce'"):
        Loss("dice", "classification")
    with pytest.raises(ValueError, match="loss must be one of"):
        Loss("focal", "segmentation")
