"""Benchmark: AnimateZero's replay of the recorded first frame per UNet call, the device-side lookup vs the host
lookup it replaced (``tests/fixtures/replay_reference.py``: ``float(timestep)`` then the rule on Python floats).

Per UNet call of a CFG batch (2 videos × ``--frames`` frames at ``--size``²): find the evaluation for the call's σ,
pin frame 1 of the input and the output to its recorded latents, and hand the K/V sharing every spatial
self-attention's recorded keys/values (SD1.5's 16 layers, both branches, as ``first_frame_anchors`` takes them).
Host lookup: the recorded tensors as stored (per evaluation). Device lookup: :class:`TrajectoryReplay` with the
keys/values stacked per layer for the run, gathered by the device index. Paired and interleaved on the CPU (ratio
per pair, median and p10–p90), once with the latents only (kv_source "video pass") and once with the keys/values
("image pass"); the calls walk a ``--steps``-step Euler schedule. On a GPU the host lookup also waits for the
device at every call, which a CPU run cannot show.

Usage: python tests/benchmarks/bench_trajectory_replay.py [--pairs N] [--size PX] [--steps N] [--frames N]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_first_frame_kv import layer_shapes  # noqa: E402
from bench_motion_module import paired  # noqa: E402

from pix2gif_core.animatezero.first_frame_features import first_frame_anchors  # noqa: E402
from pix2gif_core.animatezero.first_frame_pinning import (FirstFrameTrajectory, PinnedEvaluation,  # noqa: E402
                                                          pin_first_frames)
from pix2gif_core.animatezero.trajectory_replay import TrajectoryReplay  # noqa: E402
from tests.fixtures.replay_reference import HostReplay  # noqa: E402

BRANCHES = [1, 0]


def trajectory(size: int, steps: int, with_features: bool) -> FirstFrameTrajectory:
    """An Euler-like trajectory of ``steps`` evaluations at ``size``², with float32 keys/values if asked."""
    latent = size // 8
    levels = [float(torch.tensor(14.6 * 0.7**step)) for step in range(steps)]
    shapes = layer_shapes(size)

    def features() -> dict:
        if not with_features:
            return {}
        return {(branch, layer): (torch.randn(tokens, channels), torch.randn(tokens, channels))
                for branch in BRANCHES for layer, tokens, channels in shapes}

    evaluations = tuple(PinnedEvaluation(level, torch.randn(1, 4, latent, latent), torch.randn(1, 4, latent, latent),
                                         features()) for level in levels)
    return FirstFrameTrajectory((*levels, 0.0), evaluations, "generated", f"{steps} steps", (0.03, 14.6))


def anchors_of(features, frames: int, own: dict) -> list[torch.Tensor]:
    """What the K/V sharing does with one call's recorded keys/values: the anchors of every layer (``own``: the
    video's keys per layer, ``(2·frames, T, C)``)."""
    return [first_frame_anchors(keys, keys, frames, BRANCHES, layer, features)[0] for layer, keys in own.items()]


def cases(size: int, steps: int, frames: int, pairs: int, with_features: bool) -> dict:
    recorded = trajectory(size, steps, with_features)
    levels = [evaluation.sigma for evaluation in recorded.evaluations]
    batch = torch.randn(len(BRANCHES) * frames, 4, size // 8, size // 8)
    own = {layer: torch.randn(len(BRANCHES) * frames, tokens, channels) for layer, tokens, channels in layer_shapes(size)}
    host, device = HostReplay(levels), TrajectoryReplay(recorded)
    device.start_run()
    calls = {"host": 0, "device": 0}

    def timestep(name: str) -> torch.Tensor:
        sigma = levels[calls[name] % steps]
        calls[name] += 1
        return torch.full((batch.shape[0],), sigma)

    def host_call():
        index = host.select(float(timestep("host")[0]))
        evaluation = recorded.evaluations[index]
        pinned = pin_first_frames(batch, frames, evaluation.state)
        out = pin_first_frames(pinned, frames, evaluation.denoised)
        anchors = anchors_of(evaluation.features, frames, own) if with_features else []
        host.done()
        return out, anchors

    def device_call():
        index = device.select(timestep("device")[0])
        device.stack_features(index.device, lambda needed: True)
        state, denoised = device.latents_at(index)
        pinned = pin_first_frames(batch, frames, state)
        out = pin_first_frames(pinned, frames, denoised)
        anchors = anchors_of(device.features_at(index, None), frames, own) if with_features else []
        device.evaluation_done()
        return out, anchors

    label = "latents + keys/values (image pass)" if with_features else "latents only (video pass)"
    return paired(f"replay per UNet call, {label}", host_call, device_call, pairs, 3, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, fp32, {args.size}², "
          f"{len(BRANCHES)}×{args.frames} frames, {args.steps} steps", flush=True)
    print("\n| case | pairs | host lookup ms | device lookup ms | ratio median [p10–p90] |\n|---|---|---|---|---|")
    with torch.no_grad():
        for with_features in (False, True):
            row = cases(args.size, args.steps, args.frames, args.pairs, with_features)
            print(f"| {row['case']} | {row['pairs']} | {row['naive_ms']:.3f} | {row['ours_ms']:.3f} | "
                  f"{row['ratio']:.3f} [{row['p10']:.3f}–{row['p90']:.3f}] |", flush=True)


if __name__ == "__main__":
    main()
