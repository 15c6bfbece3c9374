"""Deterministic cost counters (meta device, SD1.5 shapes): our motion modules add AnimateDiff's FLOPs."""
from __future__ import annotations

import pytest

import cost_model

PUBLISHED_ADDED_TFLOP_PER_FRAME = 0.306  # performance.md §2a, counted on diffusers' AnimateDiff v2


@pytest.fixture(scope="module")
def costs(host):
    return cost_model.sd15_call_costs(videos=2, frames=16, side=64)


def test_motion_modules_add_the_flops_animatediff_adds(costs):
    plain, with_motion = costs
    added = with_motion.flops - plain.flops
    assert added == pytest.approx(cost_model.animatediff_added_flops(videos=2, frames=16), rel=0.01)
    assert added / 1e12 / 32 == pytest.approx(PUBLISHED_ADDED_TFLOP_PER_FRAME, rel=0.01)


def test_plain_unet_matches_the_published_sd15_count(costs):
    plain, _ = costs
    assert plain.flops / 1e12 / 32 == pytest.approx(0.803, rel=0.01)  # performance.md §2a: 0.803 TFLOP/frame
