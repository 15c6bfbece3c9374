"""Cost of Motion-Inversion embeddings in one AnimateDiff temporal attention (performance.md §5, B6).

Paired, interleaved timing in one process, fp32, one thread, real SD1.5 shapes with CFG (batch 2, 16 frames):
C=320 at 64×64 positions and C=1280 at 16×16. Per repetition the variants run back to back in a rotating
order, and each candidate's time is divided by the plain attention's time of the same repetition; reported:
median ratio and p10–p90 over the repetitions (after one warm-up call each).

1. Whole attention (``TemporalSelfAttention.forward``: PE, Q/K/V, SDPA, to_out): plain vs query/key embedding
   only (mode "camera") vs query/key + value embedding (mode "as_trained"). Target ≤ 1.05 (performance.md §6).
2. Token inputs only (what differs): plain ``hidden + pe`` vs the same again (A/A noise control) vs the
   embedding inputs. Q/K read ``tokens = hidden + (pe + qk)`` (folded into the PE add); V reads ``hidden + pe``
   or ``tokens + (v − qk)`` — a second full add, since V must not see the query/key embedding.

Run: ``OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_motion_embedding.py`` (≈3 min on a
2-core VM; ``REPS`` overrides the 15 repetitions).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pix2gif_core.motion_inversion.embeddings import ApplyOptions, LayerEmbedding, MotionEmbeddingAttention  # noqa: E402
from pix2gif_core.animatediff.motion_module import TemporalSelfAttention  # noqa: E402

REPS = int(os.environ.get("REPS", "15"))
FRAMES, VIDEOS = 16, 2
SHAPES = ((320, 64), (1280, 16))  # (channels, token grid side)


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_ratios(baseline: Callable[[], object], candidates: dict[str, Callable[[], object]]) -> dict[str, dict]:
    """Time baseline and candidates once per repetition in rotating order; ratios to that repetition's baseline."""
    runs = {"baseline": baseline, **candidates}
    for fn in runs.values():
        fn()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(REPS):
        shift = rep % len(names)
        order = names[shift:] + names[:shift]
        for name in order if rep % 2 == 0 else reversed(order):
            times[name].append(_seconds(runs[name]))
    rows = {}
    for name in candidates:
        ratios = sorted(t / b for t, b in zip(times[name], times["baseline"]))
        rows[name] = dict(
            baseline_ms=statistics.median(times["baseline"]) * 1e3,
            ms=statistics.median(times[name]) * 1e3,
            median=statistics.median(ratios),
            p10=ratios[int(0.1 * (len(ratios) - 1))],
            p90=ratios[round(0.9 * (len(ratios) - 1))],
        )
    return rows


def _report(title: str, rows: dict[str, dict]) -> None:
    for name, row in rows.items():
        print(
            f"{title:34s} {name:22s} A={row['baseline_ms']:8.1f} ms  B={row['ms']:8.1f} ms  "
            f"B/A={row['median']:.3f} [p10 {row['p10']:.3f}, p90 {row['p90']:.3f}]",
            flush=True,
        )


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {REPS}")
    for channels, side in SHAPES:
        positions = side * side
        shape = f"C={channels} {side}x{side} F={FRAMES} b={VIDEOS}"
        attn = TemporalSelfAttention(channels, pe_length=32).eval()
        hidden = torch.randn(VIDEOS * positions, FRAMES, channels)
        layer = LayerEmbedding(
            0.1 * torch.randn(1, FRAMES, channels), 0.1 * torch.randn(positions, FRAMES, channels), (side, side)
        )
        qk_only = MotionEmbeddingAttention(layer, (side, side), ApplyOptions("camera"))
        qk_and_v = MotionEmbeddingAttention(layer, (side, side), ApplyOptions("as_trained"))
        with torch.no_grad():
            _report(
                f"attention {shape}",
                paired_ratios(
                    lambda: attn(hidden),
                    {"qk embedding": lambda: attn(hidden, qk_only), "qk + v embedding": lambda: attn(hidden, qk_and_v)},
                ),
            )
            pe = attn.position_encoding(FRAMES, hidden)
            qk, value_offset = qk_and_v.prepared(FRAMES, hidden)
            _report(
                f"token inputs {shape}",
                paired_ratios(
                    lambda: hidden + pe,
                    {
                        "plain again (A/A)": lambda: hidden + pe,
                        "qk: Q/K and V inputs": lambda: (hidden + (pe + qk), hidden + pe),
                        "qk + v: Q/K and V": lambda: (
                            tokens := hidden + (pe + qk),
                            (tokens.unflatten(0, (VIDEOS, positions)) + value_offset).flatten(0, 1),
                        ),
                    },
                ),
            )


if __name__ == "__main__":
    main()
