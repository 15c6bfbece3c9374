"""Recording frame 1's keys/values per branch and layer, and choosing each video's anchors from them."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.animatezero.first_frame_features import FeatureRecorder, feature_bytes, first_frame_anchors
from pix2gif_core.errors import Pix2GifInputError

LAYER = ("input", 1, 0)


def test_recorder_keeps_copies_per_branch_and_closes_evaluations():
    recorder = FeatureRecorder(lambda t: t)
    keys, values = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    recorder.record([1, 0], LAYER, keys, values)
    recorder.record([1, 0], LAYER, keys + 1, values + 1)  # a second call in the same evaluation is ignored
    keys_seen = keys.clone()
    keys.add_(100)  # the model reusing its buffer must not change what was recorded
    first = recorder.take()
    assert set(first) == {(1, LAYER), (0, LAYER)}
    assert torch.equal(first[(1, LAYER)][0], keys_seen[0]) and torch.equal(first[(0, LAYER)][1], values[1])
    assert feature_bytes(first) == 2 * 2 * 5 * 8 * 4
    assert recorder.take() == {}


def test_recorder_refuses_a_batch_that_is_not_one_image_per_branch():
    with pytest.raises(Pix2GifInputError, match="one latent per branch"):
        FeatureRecorder(lambda t: t).record([0], LAYER, torch.randn(3, 5, 8), torch.randn(3, 5, 8))


def test_anchors_are_recorded_where_the_branch_was_recorded_else_own_frame_0():
    frames, tokens, channels = 3, 5, 8
    keys, values = torch.randn(2 * frames, tokens, channels), torch.randn(2 * frames, tokens, channels)
    recorded = (torch.randn(tokens, channels, dtype=torch.float64), torch.randn(tokens, channels, dtype=torch.float64))
    anchor_k, anchor_v, injected = first_frame_anchors(keys, values, frames, [1, 0], LAYER, {(0, LAYER): recorded})
    assert injected == 1 and anchor_k.dtype == keys.dtype
    assert torch.equal(anchor_k[0], keys[0]) and torch.equal(anchor_v[0], values[0])  # branch 1: not recorded
    assert torch.equal(anchor_k[1], recorded[0].float()) and torch.equal(anchor_v[1], recorded[1].float())


def test_anchors_of_another_size_name_the_fix():
    keys = torch.randn(4, 5, 8)
    with pytest.raises(Pix2GifInputError, match="checkpoint and size"):
        first_frame_anchors(keys, keys, 2, [0, 1], LAYER, {(0, LAYER): (torch.randn(6, 8), torch.randn(6, 8))})
