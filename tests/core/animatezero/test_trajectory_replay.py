"""The first-frame replay found on the device: the same recorded evaluation as the host rule on Python floats
(``tests/fixtures/replay_reference.py``, the pack's code before the device lookup) for every call of every
sampler pattern, between-level and zero σ included; the errors it raised; no tensor → Python conversion in a marked
run after its first evaluations; recorded keys/values gathered on the device equal to the recorded ones."""
from __future__ import annotations

import math
import random

import pytest
import torch

from pix2gif_core.animatezero.first_frame_pinning import FirstFrameTrajectory, PinnedEvaluation
from pix2gif_core.animatezero.trajectory_replay import (DEPARTURE_CHECKED_EVALUATIONS, NO_EVALUATION,
                                                        TrajectoryReplay)
from pix2gif_core.errors import Pix2GifInputError
from tests.fixtures.replay_reference import HostReplay
from tests.fixtures.tensor_conversions import TensorConversionCounter

SHAPE = (1, 4, 3, 3)
NOISE_RANGE = (0.03, 14.6)
LAYERS = (("input", 1, 0), ("output", 3, 0))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fake_trajectory(levels: list[float], origin: str = "generated", features: bool = False) -> FirstFrameTrajectory:
    """Evaluation i has state i, denoised −i and (``features``) keys 10·i + layer, values −(10·i + layer)."""
    def recorded(i: int) -> dict:
        if not features:
            return {}
        return {(branch, layer): (torch.full((5, 8), 10.0 * i + n), torch.full((5, 8), -(10.0 * i + n)))
                for branch in (0, 1) for n, layer in enumerate(LAYERS)}

    evaluations = tuple(PinnedEvaluation(level, torch.full(SHAPE, float(i)), torch.full(SHAPE, -float(i)),
                                         recorded(i)) for i, level in enumerate(levels))
    schedule_levels = tuple(sorted(set(levels), reverse=True)) + (0.0,)
    return FirstFrameTrajectory(schedule_levels, evaluations, origin, "3 steps, sampler heun", NOISE_RANGE)


def replayed(replay: TrajectoryReplay, levels: list[float]) -> list[int]:
    """Indices read for one evaluation per level, each asked by two UNet calls (cond and uncond split)."""
    indices = []
    for level in levels:
        indices.append(replay.read(replay.select(torch.tensor(level))))
        assert replay.read(replay.select(torch.tensor(level))) == indices[-1], "cond and uncond calls agree"
        replay.evaluation_done()
    return indices


HEUN = [9.0, 3.0, 3.0, 1.0, 1.0]  # Heun over 9 → 3 → 1 → 0: the predictor evaluates each next level first


def test_replay_follows_the_recorded_order_and_restarts():
    replay = TrajectoryReplay(fake_trajectory(HEUN))
    assert replayed(replay, HEUN) == [0, 1, 2, 3, 4]
    assert replayed(replay, HEUN[:3]) == [0, 1, 2], "the highest level again starts a new run"
    assert replayed(replay, HEUN) == [0, 1, 2, 3, 4], "an interrupted run restarts too"


def test_replay_of_a_heun_trajectory_by_euler_and_of_one_level_per_step_by_heun():
    assert replayed(TrajectoryReplay(fake_trajectory(HEUN)), [9.0, 3.0, 1.0]) == [0, 1, 3]
    assert replayed(TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0], "inverted")), HEUN) == [0, 1, 1, 2, 2]


@pytest.mark.parametrize("levels", [[9.0, 1.0], [9.0, 3.0, 2.0]])
def test_replay_refuses_skipped_or_unknown_levels(levels):
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0]))
    with pytest.raises(Pix2GifInputError, match=r"3 steps, sampler heun.*same steps, scheduler, sampler and denoise"):
        replayed(replay, levels)


def test_replay_must_start_at_the_highest_level():
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0]))
    with pytest.raises(Pix2GifInputError, match="at σ=3 where the first-frame trajectory expects σ=9"):
        replay.read(replay.select(torch.tensor(3.0)))


def test_schedule_check_names_both_step_counts():
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0]))
    replay.check_schedule(torch.tensor([9.0, 3.0, 1.0, 0.0]))
    with pytest.raises(Pix2GifInputError, match=r"over 3 steps but the video pass samples 2.*made with 3 steps"):
        replay.check_schedule(torch.tensor([9.0, 1.0, 0.0]))


def test_a_checked_schedule_is_not_read_again_in_its_run():
    """The sampler hands every call of a run the same schedule tensor: read (and checked) once; a new tensor is
    checked again."""
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0]))
    schedule = torch.tensor([9.0, 3.0, 1.0, 0.0])
    replay.check_schedule(schedule)
    schedule[1] = 5.0  # an in-place change is invisible without reading: the run's tensor is trusted
    replay.check_schedule(schedule)
    with pytest.raises(Pix2GifInputError, match="step 1"):
        replay.check_schedule(schedule.clone())


def test_departure_is_reported_once_per_run_and_never_for_inverted_trajectories():
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0]))
    position = replay.read(replay.select(torch.tensor(9.0)))
    state = replay.latents_at(replay.select(torch.tensor(9.0)))[0]
    assert not replay.departs(state.expand(2, -1, -1, -1), position)
    assert replay.departs(state + 1e-2, position)
    assert not replay.departs(state + 1.0, position), "once per run"
    replay.evaluation_done()
    replay.read(replay.select(torch.tensor(3.0)))
    replay.evaluation_done()
    position = replay.read(replay.select(torch.tensor(9.0)))  # a new run
    assert replay.departs(state + 1e-2, position)
    inverted = TrajectoryReplay(fake_trajectory([9.0, 3.0], "inverted"))
    assert not inverted.departs(state + 1.0, inverted.read(inverted.select(torch.tensor(9.0))))


@pytest.mark.parametrize(("leaves_at", "reported"), [(0, True), (1, True), (2, False)])
def test_departures_are_looked_for_in_the_first_evaluations_of_a_run_only(leaves_at, reported):
    """Frame 1 leaves the trajectory at evaluation ``leaves_at`` and stays off it: seen in the run's first two
    evaluations (other start noise, an ancestral sampler's first fresh noise), not read later."""
    replay = TrajectoryReplay(fake_trajectory([9.0, 3.0, 1.0]))
    seen = []
    for index, sigma in enumerate((9.0, 3.0, 1.0)):
        selected = replay.select(torch.tensor(sigma))
        state = replay.latents_at(selected)[0]
        seen.append(replay.departs(state + (1.0 if index >= leaves_at else 0.0), replay.read(selected)))
        replay.evaluation_done()
    assert seen == [reported and index == leaves_at for index in range(3)]


def f32(value: float) -> float:
    """``value`` as the float32 σ a sampler hands the model (and a recorder stores)."""
    return float(torch.tensor(value, dtype=torch.float32))


def sampler_patterns(levels: list[float]) -> dict[str, list[float]]:
    """The σ of each model evaluation of a sampler over ``levels`` (descending, last > 0, then 0): one per level
    (euler-like), Heun's predictor/corrector (no corrector on the step to 0), DPM2's midpoints (Euler to 0)."""
    heun = [sigma for high, low in zip(levels, levels[1:]) for sigma in (high, low)] + [levels[-1]]
    dpm_2 = [sigma for high, low in zip(levels, levels[1:]) for sigma in (high, math.sqrt(high * low))] + [levels[-1]]
    return {"euler": [f32(level) for level in levels], "heun": [f32(level) for level in heun],
            "dpm_2": [f32(level) for level in dpm_2]}


def call_sequences(levels: list[float]) -> dict[str, list[float]]:
    """Video-pass σ sequences: every pattern, a run interrupted and restarted, a call at σ = 0 (the last level)
    and at σ between recorded ones, and random walks over all of them."""
    patterns = sampler_patterns(levels)
    between = [f32(math.sqrt(high * low)) for high, low in zip(levels, levels[1:])]
    sequences = {**patterns, "euler twice": patterns["euler"] * 2,
                 "interrupted heun, then heun": patterns["heun"][:4] + patterns["heun"],
                 "euler, then σ=0": patterns["euler"] + [0.0], "off between levels": patterns["euler"][:2] + between,
                 "σ=0 first": [0.0]}
    pool = sorted(set(sum(patterns.values(), [])) | set(between) | {0.0, 123.0})
    rng = random.Random(0)
    for walk in range(40):  # a pattern with random repeats, restarts and stray σ
        steps = []
        for sigma in rng.choice(list(patterns.values())) * 2:
            odds = rng.random()
            steps += [sigma] if odds > 0.1 else [sigma, sigma] if odds > 0.03 else [rng.choice(pool), sigma]
        sequences[f"random walk {walk}"] = steps
    return sequences


LEVELS = [14.6, 6.1, 2.4, 0.9, 0.3, 0.03]
TRAJECTORIES = {name: pattern for name, pattern in sampler_patterns(LEVELS).items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("trajectory_kind", list(TRAJECTORIES))
def test_the_device_selects_the_evaluation_the_host_rule_selects_at_every_call(trajectory_kind, device):
    """For each video-pass call sequence, call by call (every evaluation asked by two UNet calls): the device index
    equals the host rule's, and where the host rule found no evaluation the device gives NO_EVALUATION and the read
    raises the error."""
    levels = TRAJECTORIES[trajectory_kind]
    compared = mismatches = 0
    for name, sequence in call_sequences(LEVELS).items():
        replay, reference = TrajectoryReplay(fake_trajectory(levels)), HostReplay(levels)
        for call, sigma in enumerate(sequence):
            try:
                expected = reference.select(sigma)
            except LookupError:
                expected = NO_EVALUATION
            for _ in range(2):  # cond and uncond in separate UNet calls
                selected = replay.select(torch.tensor(sigma, dtype=torch.float32, device=device))
                assert selected.device.type == device and int(selected) == expected, (name, call, sigma)
            compared += 1
            if expected == NO_EVALUATION:
                mismatches += 1
                with pytest.raises(Pix2GifInputError, match=f"at σ={sigma:.4g} where"):
                    replay.read(selected)
                break  # the old code raised here: the run ended
            reference.done()
            replay.evaluation_done()
    assert compared > 200 and 10 < mismatches < len(call_sequences(LEVELS)) - 5, (compared, mismatches)


def test_a_marked_run_reads_nothing_after_its_first_evaluations():
    """start_run … verify_run: the first DEPARTURE_CHECKED_EVALUATIONS evaluations are read, then selecting,
    gathering the latents and the stacked keys/values and closing the evaluation convert no tensor to Python; the
    one read after the run finds it on the recorded order."""
    levels = TRAJECTORIES["heun"]
    replay = TrajectoryReplay(fake_trajectory(levels, features=True))
    replay.start_run()
    counts = []
    for expected, sigma in enumerate(levels):
        sigma_tensor = torch.tensor(sigma, dtype=torch.float32)
        with TensorConversionCounter() as counter:
            index = replay.select(sigma_tensor)
            position = replay.read(index) if replay.reads_each_call else None
            assert replay.stack_features(index.device, lambda needed: True)
            state, denoised = replay.latents_at(index)
            keys, values = replay.features_at(index, position)[(1, LAYERS[1])]
            replay.evaluation_done()
        counts.append(counter.total)
        assert torch.equal(state, torch.full(SHAPE, float(expected))) and torch.equal(denoised, -state)
        assert torch.equal(keys, torch.full((5, 8), 10.0 * expected + 1)) and torch.equal(values, -keys)
    assert counts[DEPARTURE_CHECKED_EVALUATIONS:] == [0] * (len(levels) - DEPARTURE_CHECKED_EVALUATIONS), counts
    assert all(count > 0 for count in counts[:DEPARTURE_CHECKED_EVALUATIONS]), counts
    replay.verify_run()
    replay.end_run()
    assert replay.reads_each_call and not replay.stack_features(torch.device("cpu"), lambda needed: True)


def test_a_marked_run_that_leaves_the_recorded_order_late_fails_after_the_run():
    """A call that fits nowhere after the read evaluations is latched on the device: verify_run raises naming its
    σ and the expected one, and the next run starts clean."""
    levels = TRAJECTORIES["euler"]
    replay = TrajectoryReplay(fake_trajectory(levels))
    replay.start_run()
    for sigma in levels[:3] + [f32(0.5), levels[3]]:
        replay.select(torch.tensor(sigma))
        replay.evaluation_done()
    with pytest.raises(Pix2GifInputError, match=f"at σ=0.5 where the first-frame trajectory expects σ={levels[3]:.4g}"):
        replay.verify_run()
    replay.end_run()
    replay.start_run()
    assert replayed(replay, levels) == list(range(len(levels)))
    replay.verify_run()


def test_keys_values_that_do_not_fit_are_read_from_the_trajectory():
    """When the budget refuses the stack, features_at needs the read position and returns the recorded tensors."""
    trajectory = fake_trajectory(TRAJECTORIES["euler"], features=True)
    replay = TrajectoryReplay(trajectory)
    replay.start_run()
    budgets = []
    assert not replay.stack_features(torch.device("cpu"), lambda needed: budgets.append(needed) or False)
    assert budgets == [trajectory.feature_bytes]
    index = replay.select(torch.tensor(TRAJECTORIES["euler"][0]))
    with pytest.raises(ValueError, match="read the index"):
        replay.features_at(index, None)
    assert replay.features_at(index, replay.read(index)) is trajectory.evaluations[0].features
