"""AnimateZero's per-step tensor work traces into one graph: window attention (both paths), K/V sharing (both
modes, own or recorded anchors) and the first-frame pinning compile with ``torch.compile(fullgraph=True)`` on the
CPU, and so does the replay's lookup of the recorded evaluation with the gathering and pinning of its latents and
keys/values; ``torch._dynamo.explain`` counts no graph break, and the compiled result equals the eager one. A tensor →
Python conversion (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``) in any of them breaks the graph."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.animatediff.motion_module import TemporalSelfAttention
from pix2gif_core.animatezero.first_frame_pinning import pin_first_frames
from pix2gif_core.animatezero.first_frame_features import SelectedFeatures
from pix2gif_core.animatezero.shared_kv_attention import in_sigma_range, shared_kv_attention
from pix2gif_core.animatezero.trajectory_replay import replay_table, replayed_index
from pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention

FRAMES = 6


def assert_one_graph(fn, *args) -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), fn(*args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["decomposed", "fused"])
@pytest.mark.parametrize("window_length", [None, 3])
def test_window_attention(fused, window_length):
    torch.manual_seed(0)
    attn = TemporalSelfAttention(16, pe_length=32, heads=2)
    hidden = torch.randn(4, FRAMES, 16)
    variant = PositionCorrectedWindowAttention(window_length, fused=fused, chunk_bytes=2**20)
    with torch.no_grad():
        assert_one_graph(lambda x: attn(x, variant), hidden)


@pytest.mark.parametrize("mode", ["replace", "concat"])
@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("step_range", [False, True], ids=["whole denoising", "σ range"])
def test_kv_sharing(mode, recorded, step_range):
    """With a σ range the UNet call's σ decides on the device whether the frames share (traced, the range test
    reads nothing even on the CPU)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2 * FRAMES, 10, 16) for _ in range(3))
    anchors = (torch.randn(2, 10, 16), torch.randn(2, 10, 16))

    def attend(q, k, v, anchor_k, anchor_v, sigmas):
        active = in_sigma_range(sigmas, (1.0, 8.0)) if step_range else None
        return shared_kv_attention(q, k, v, 2, FRAMES, mode, anchors=(anchor_k, anchor_v) if recorded else None,
                                   active=active)

    for sigma in (14.6, 2.4):
        assert_one_graph(attend, q, k, v, *anchors, torch.full((2,), sigma))


def test_first_frame_pinning():
    batch, first = torch.randn(2 * FRAMES, 4, 8, 8), torch.randn(1, 4, 8, 8)
    assert_one_graph(lambda x, state: pin_first_frames(x, FRAMES, state), batch, first)


@pytest.mark.parametrize("sigma", [14.6, 2.4, 1.0, 0.0], ids=["first", "later", "between levels", "zero"])
def test_replayed_evaluation_lookup_and_pinning(sigma):
    """One UNet call's replay: the index from σ and the cursor, frame 1's recorded latent pinned into the batch,
    the recorded keys of one layer gathered – one graph."""
    levels = [14.6, 6.1, 2.4, 2.4, 0.9]
    table = replay_table(levels, torch.device("cpu"))
    states = torch.randn(len(levels), 1, 4, 8, 8)
    stacked = {(0, ("input", 1, 0)): (torch.randn(len(levels), 10, 16), torch.randn(len(levels), 10, 16))}
    batch = torch.randn(2 * FRAMES, 4, 8, 8)

    def replay_call(x, call_sigma, cursor, current):
        index = replayed_index(table, cursor, current, call_sigma)
        picked = index.clamp(min=0).reshape(1)
        keys, _ = SelectedFeatures(stacked, picked)[(0, ("input", 1, 0))]
        return pin_first_frames(x, FRAMES, states.index_select(0, picked)[0]), keys, index

    assert_one_graph(replay_call, batch, torch.tensor(sigma), torch.tensor(2), torch.tensor(-1))
