"""Motion Inversion losses against float64 formulas written out element by element."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.motion_inversion.loss import DEBIAS_ALPHA, debiased_loss, plain_loss


def _mean_square(a: torch.Tensor) -> float:
    return float((a.double() ** 2).sum() / a.numel())


def _reference_debiased(pred: torch.Tensor, target: torch.Tensor, frames: int, r: int, alpha: float, beta: float) -> float:
    """Per-video loop in float64: MSE + MSE of (α·x_f − β·x_r) over every frame f."""
    p, t = pred.double(), target.double()
    total = _mean_square(p - t)
    diffs = []
    for start in range(0, p.shape[0], frames):
        for f in range(frames):
            dp = alpha * p[start + f] - beta * p[start + r]
            dt = alpha * t[start + f] - beta * t[start + r]
            diffs.append((dp - dt).flatten())
    return total + _mean_square(torch.cat(diffs))


def test_plain_loss_is_mean_square_error() -> None:
    pred, target = torch.randn(6, 4, 3, 5), torch.randn(6, 4, 3, 5)
    assert float(plain_loss(pred, target)) == pytest.approx(_mean_square(pred - target), rel=1e-6)


@pytest.mark.parametrize("videos, frames, r", [(1, 6, 0), (1, 6, 4), (3, 4, 2)])
def test_debiased_loss_matches_formula(videos: int, frames: int, r: int) -> None:
    pred, target = torch.randn(videos * frames, 4, 3, 5), torch.randn(videos * frames, 4, 3, 5)
    got = debiased_loss(pred, target, video_length=frames if videos > 1 else None, reference_frame=r)
    assert float(got) == pytest.approx(_reference_debiased(pred, target, frames, r, math.sqrt(2.0), 1.0), rel=1e-5)


def test_debiased_loss_custom_weights_and_half_precision() -> None:
    pred, target = torch.randn(8, 4, 2, 2), torch.randn(8, 4, 2, 2)
    got = debiased_loss(pred.half(), target.half(), video_length=4, alpha=1.5, beta=0.5, reference_frame=3)
    assert got.dtype == torch.float32
    want = _reference_debiased(pred.half(), target.half(), 4, 3, 1.5, 0.5)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_random_reference_frame_is_one_of_the_frames_and_reproducible() -> None:
    pred, target = torch.randn(5, 4, 2, 3), torch.randn(5, 4, 2, 3)
    candidates = [_reference_debiased(pred, target, 5, r, DEBIAS_ALPHA, 1.0) for r in range(5)]
    drawn = [float(debiased_loss(pred, target, generator=torch.Generator().manual_seed(s))) for s in range(12)]
    for value in drawn:
        assert min(abs(value - c) / c for c in candidates) < 1e-5
    assert len({round(v, 4) for v in drawn}) > 1  # different seeds pick different frames
    again = float(debiased_loss(pred, target, generator=torch.Generator().manual_seed(3)))
    assert again == drawn[3]


def test_losses_are_zero_when_prediction_is_exact() -> None:
    x = torch.randn(8, 4, 3, 3)
    assert float(plain_loss(x, x.clone())) == 0.0
    assert float(debiased_loss(x, x.clone(), video_length=4)) == 0.0


def test_gradient_reaches_the_prediction() -> None:
    pred = torch.randn(4, 2, 2, 2, requires_grad=True)
    debiased_loss(pred, torch.randn(4, 2, 2, 2), reference_frame=1).backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "pred_shape, target_shape, kwargs, fragment",
    [
        ((4, 2, 2, 2), (4, 2, 2, 3), {}, "target noise"),
        ((6, 2, 2, 2), (6, 2, 2, 2), {"video_length": 4}, "video_length"),
        ((4, 2, 2, 2), (4, 2, 2, 2), {"reference_frame": 4}, "reference_frame"),
        ((4, 2, 2), (4, 2, 2), {}, "video latents"),
    ],
)
def test_bad_inputs_raise_named_errors(pred_shape, target_shape, kwargs, fragment) -> None:
    with pytest.raises(Pix2GifInputError, match=fragment):
        debiased_loss(torch.zeros(pred_shape), torch.zeros(target_shape), **kwargs)
