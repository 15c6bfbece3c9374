"""Shared first-frame K/V against attention whose keys/values are computed from frame 0's hidden states."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatezero import shared_kv_attention as sharing
from pix2gif_core.animatezero.shared_kv_attention import first_frame_kv, in_sigma_range, shared_kv_attention

CHUNKS, FRAMES, TOKENS, CHANNELS, HEADS = 2, 3, 5, 8, 2


@pytest.fixture
def setup():
    torch.manual_seed(0)
    hidden = torch.randn(CHUNKS * FRAMES, TOKENS, CHANNELS, dtype=torch.float64)
    weights = [torch.randn(CHANNELS, CHANNELS, dtype=torch.float64) for _ in range(3)]
    return hidden, weights


def reference(hidden, weights, mode):
    """Per chunk c and frame f: queries from (c, f); keys/values projected from (c, 0) [replace] or from (c, f)
    followed by (c, 0) [concat] or from (c, f) alone [own: plain self-attention]; explicit softmax per head."""
    weight_q, weight_k, weight_v = weights
    head_dim = CHANNELS // HEADS
    video = hidden.reshape(CHUNKS, FRAMES, TOKENS, CHANNELS)
    out = torch.empty(CHUNKS, FRAMES, TOKENS, CHANNELS, dtype=torch.float64)
    for c in range(CHUNKS):
        for f in range(FRAMES):
            sources = {"replace": video[c, 0], "own": video[c, f]}.get(mode, torch.cat([video[c, f], video[c, 0]]))
            q = (video[c, f] @ weight_q.T).reshape(TOKENS, HEADS, head_dim)
            k = (sources @ weight_k.T).reshape(-1, HEADS, head_dim)
            v = (sources @ weight_v.T).reshape(-1, HEADS, head_dim)
            probabilities = (torch.einsum("qhd,khd->hqk", q, k) / head_dim**0.5).softmax(-1)
            out[c, f] = torch.einsum("hqk,khd->qhd", probabilities, v).reshape(TOKENS, CHANNELS)
    return out.reshape(CHUNKS * FRAMES, TOKENS, CHANNELS)


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_replace_hook_matches_reference(setup, mode):
    hidden, (weight_q, weight_k, weight_v) = setup
    got = shared_kv_attention(hidden @ weight_q.T, hidden @ weight_k.T, hidden @ weight_v.T, HEADS, FRAMES, mode)
    torch.testing.assert_close(got, reference(hidden, setup[1], mode))


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_patch_hook_on_hidden_states_matches_reference(setup, mode):
    """The attn1_patch route: share the hidden states, then project as ComfyUI does and attend normally."""
    hidden, (weight_q, weight_k, weight_v) = setup
    context, value = first_frame_kv(hidden, hidden, FRAMES, mode)
    head_dim = CHANNELS // HEADS

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], HEADS, head_dim).transpose(1, 2)

    attended = torch.nn.functional.scaled_dot_product_attention(
        split(hidden @ weight_q.T), split(context @ weight_k.T), split(value @ weight_v.T)
    )
    got = attended.transpose(1, 2).reshape(CHUNKS * FRAMES, TOKENS, CHANNELS)
    torch.testing.assert_close(got, reference(hidden, setup[1], mode))


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_chunks_never_mix(setup, mode):
    hidden, (weight_q, weight_k, weight_v) = setup
    changed = hidden.clone()
    changed[FRAMES:] += torch.randn_like(changed[FRAMES:])  # the second (uncond) chunk only

    def run(states):
        return shared_kv_attention(states @ weight_q.T, states @ weight_k.T, states @ weight_v.T, HEADS, FRAMES, mode)

    before, after = run(hidden), run(changed)
    torch.testing.assert_close(after[:FRAMES], before[:FRAMES], rtol=0, atol=0)
    assert (after[FRAMES:] - before[FRAMES:]).abs().max() > 1e-3


def test_replace_shapes_and_anchor_rows():
    states = torch.arange(CHUNKS * FRAMES, dtype=torch.float64)[:, None, None].expand(-1, TOKENS, CHANNELS)
    k, v = first_frame_kv(states, states + 100, FRAMES, "replace")
    assert k.shape == states.shape
    assert k[:, 0, 0].tolist() == [0, 0, 0, 3, 3, 3]
    assert v[:, 0, 0].tolist() == [100, 100, 100, 103, 103, 103]
    k, _ = first_frame_kv(states, states, FRAMES, "concat")
    assert k.shape == (CHUNKS * FRAMES, 2 * TOKENS, CHANNELS)
    assert k[:, [0, TOKENS], 0].tolist() == [[0, 0], [1, 0], [2, 0], [3, 3], [4, 3], [5, 3]]


def test_batch_not_a_multiple_of_video_length_names_the_fix(setup):
    hidden, _ = setup
    with pytest.raises(Pix2GifInputError, match="video_length=4"):
        first_frame_kv(hidden, hidden, 4, "replace")
    with pytest.raises(Pix2GifInputError, match="video_length=4"):
        shared_kv_attention(hidden, hidden, hidden, HEADS, 4, "concat")


def test_unknown_mode_lists_the_choices(setup):
    hidden, _ = setup
    with pytest.raises(Pix2GifInputError, match="replace, concat"):
        shared_kv_attention(hidden, hidden, hidden, HEADS, FRAMES, "average")


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_the_attention_kernel_is_called_with_the_same_numbers(setup, mode):
    from pix2gif_core.attention import sdpa_attention

    hidden, (weight_q, weight_k, weight_v) = setup
    q, k, v = hidden @ weight_q.T, hidden @ weight_k.T, hidden @ weight_v.T
    calls = []

    def kernel(*args):
        calls.append(args[1].shape)
        return sdpa_attention(*args)

    got = shared_kv_attention(q, k, v, HEADS, FRAMES, mode, kernel=kernel)
    assert len(calls) == 1 and calls[0][1] == HEADS
    torch.testing.assert_close(got, shared_kv_attention(q, k, v, HEADS, FRAMES, mode), rtol=0, atol=0)
    torch.testing.assert_close(got, reference(hidden, setup[1], mode))


@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_given_anchors_replace_frame_0(setup, mode):
    """Keys/values recorded elsewhere (the image pass) stand in for each chunk's frame 0: the same as the
    reference on a video whose frame 0 hidden states are the anchors' source, for every frame after frame 0."""
    hidden, weights = setup
    weight_q, weight_k, weight_v = weights
    anchor_hidden = torch.randn(CHUNKS, TOKENS, CHANNELS, dtype=torch.float64)
    got = shared_kv_attention(hidden @ weight_q.T, hidden @ weight_k.T, hidden @ weight_v.T, HEADS, FRAMES, mode,
                              anchors=(anchor_hidden @ weight_k.T, anchor_hidden @ weight_v.T))
    swapped = hidden.reshape(CHUNKS, FRAMES, TOKENS, CHANNELS).clone()
    swapped[:, 0] = anchor_hidden
    expected = reference(swapped.reshape(-1, TOKENS, CHANNELS), weights, mode).reshape(CHUNKS, FRAMES, TOKENS, -1)
    got = got.reshape(CHUNKS, FRAMES, TOKENS, CHANNELS)
    torch.testing.assert_close(got[:, 1:], expected[:, 1:])


@pytest.mark.parametrize("mode", ["replace", "concat"])
@pytest.mark.parametrize("given_anchors", [False, True], ids=["frame 0", "recorded anchors"])
def test_active_on_the_device_shares_or_attends_to_the_own_tokens(setup, mode, given_anchors):
    """``active`` as a Python bool or a 0-dim device bool (a step range decided without reading σ): True = the
    shared attention (the reference with frame 0's or the anchors' keys/values), False = every frame's plain
    self-attention, for both modes (on the device concat attends to its own tokens twice: the same softmax)."""
    hidden, weights = setup
    weight_q, weight_k, weight_v = weights
    anchor_hidden = torch.randn(CHUNKS, TOKENS, CHANNELS, dtype=torch.float64)
    anchors = (anchor_hidden @ weight_k.T, anchor_hidden @ weight_v.T) if given_anchors else None
    source = hidden.reshape(CHUNKS, FRAMES, TOKENS, CHANNELS).clone()
    if given_anchors:
        source[:, 0] = anchor_hidden
    shared = reference(source.reshape(-1, TOKENS, CHANNELS), weights, mode).reshape(CHUNKS, FRAMES, TOKENS, -1)
    later_frames = slice(1 if given_anchors else 0, None)  # frame 0 itself attends to the hidden states it has

    def attend(active):
        return shared_kv_attention(hidden @ weight_q.T, hidden @ weight_k.T, hidden @ weight_v.T, HEADS, FRAMES,
                                   mode, anchors=anchors, active=active).reshape(shared.shape)

    for active in (True, torch.tensor(True)):
        torch.testing.assert_close(attend(active)[:, later_frames], shared[:, later_frames])
    for active in (False, torch.tensor(False)):
        torch.testing.assert_close(attend(active), reference(hidden, weights, "own").reshape(shared.shape))


@pytest.mark.parametrize("read_on_host", [True, False], ids=["CPU: read", "accelerator: on the device"])
def test_sigma_range_bounds_included(monkeypatch, read_on_host):
    """σ_end ≤ max σ ≤ σ_start; a Python bool where reading is free, else a 0-dim tensor on σ's device."""
    if not read_on_host:
        monkeypatch.setattr(sharing, "READ_ON_HOST", ())
    for levels, inside in (([8.0, 8.0], True), ([2.0, 2.0], True), ([1.0, 5.0], True), ([8.5, 3.0], False),
                           ([1.9, 1.9], False), ([0.0, 0.0], False)):
        decided = in_sigma_range(torch.tensor(levels), (2.0, 8.0))
        assert isinstance(decided, bool) == read_on_host
        assert bool(decided) == inside, levels


def test_anchors_of_another_token_count_cannot_be_shared_for_part_of_the_denoising(setup):
    hidden, _ = setup
    anchors = (torch.zeros(CHUNKS, TOKENS + 1, CHANNELS, dtype=torch.float64),) * 2
    with pytest.raises(Pix2GifInputError, match="part of the denoising"):
        shared_kv_attention(hidden, hidden, hidden, HEADS, FRAMES, "replace", anchors=anchors,
                            active=torch.tensor(True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_sigma_range_on_cuda_is_decided_on_the_device(setup, mode):
    """On a GPU the range test is a device tensor and the attention chooses there; both choices match the
    reference computed on the CPU."""
    hidden, weights = setup
    weight_q, weight_k, weight_v = (w.cuda() for w in weights)
    states = hidden.cuda()
    for sigma, expected_mode in ((5.0, mode), (9.0, "own")):
        active = in_sigma_range(torch.full((2,), sigma, device="cuda"), (2.0, 8.0))
        assert isinstance(active, torch.Tensor) and active.is_cuda
        got = shared_kv_attention(states @ weight_q.T, states @ weight_k.T, states @ weight_v.T, HEADS, FRAMES,
                                  mode, active=active)
        torch.testing.assert_close(got.cpu(), reference(hidden, weights, expected_mode))
