"""Which recorded evaluation of the first-frame trajectory each model call of the video pass replays, found on the
device that holds the call's σ.

The rule: the video pass must evaluate the recorded levels in order. The next evaluation at σ takes the first
recorded one at σ from the cursor on, skipping only evaluations at the level just replayed (a Heun trajectory
replayed by Euler skips Heun's second evaluation of each level); else the highest level starts a new run (a new
sampling of the same MODEL); else it may repeat the level just replayed (Heun replaying an inverted trajectory,
which has one evaluation per level); else the video pass left the recorded order. Every UNet call of one evaluation
(cond and uncond may be split into separate calls) gets the same entry until :meth:`TrajectoryReplay
.evaluation_done`.

:func:`replayed_index` applies the rule with tensor operations only: the call's σ is compared with the recorded
levels on its own device, and the cursor and the evaluation in progress are 0-dim device tensors, so selecting an
evaluation and gathering its latents and keys/values hands nothing to Python (no device sync, one graph for
``torch.compile``). Its decisions equal those of the same rule on Python floats: σ is compared in float64 exactly as
``math.isclose`` compares them (float32 on MPS, which has no float64). A call that fits nowhere gets
:data:`NO_EVALUATION` and is latched (its σ and the cursor); :meth:`TrajectoryReplay.read` (one read, where the
caller reads anyway) or :meth:`TrajectoryReplay.verify_run` (once per sampling run, after it) raise the error.

Memory on the device: the recorded latents ``2 · evaluations · C·h·w`` (kept), and for a run whose keys/values are
stacked (:meth:`TrajectoryReplay.stack_features`) the trajectory's ``feature_bytes`` until :meth:`TrajectoryReplay
.end_run`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..diffusion.ddim_inversion import check_trajectory_sigmas
from ..errors import Pix2GifInputError
from .first_frame_features import FirstFrameFeatures, SelectedFeatures, StackedFeatures, stack_features
from .first_frame_pinning import SIGMA_RTOL, FirstFrameTrajectory

#: σ this close counts as equal as well (levels near 0)
SIGMA_ATOL = 1e-8
#: frame 1 of the sampler's latent counts as "on the trajectory" within this relative tolerance
DEPARTURE_RTOL = 1e-4
#: the first evaluations of each run are read on the host: departures are looked for there (other start noise shows
#: at the first, an ancestral/SDE sampler's fresh noise at the second), and a sampler that evaluates elsewhere than
#: the recorded levels fails there at once
DEPARTURE_CHECKED_EVALUATIONS = 2
#: index of "no recorded evaluation" (the call left the recorded order; none in progress)
NO_EVALUATION = -1


class ReplayTable(NamedTuple):
    """The recorded levels on one device: ``sigmas`` ``(E,)`` of the evaluations (float64, float32 on MPS),
    ``run_end`` ``(E + 1,)`` int64, ``run_end[c]`` = the first index ≥ c whose level is not that of evaluation
    c − 1 (c for c = 0): from cursor c the rule may skip up to it; ``positions``: ``0 … E − 1``."""

    sigmas: Tensor
    run_end: Tensor
    positions: Tensor


def replay_table(levels: list[float], device: torch.device) -> ReplayTable:
    """:class:`ReplayTable` of the evaluation levels ``levels`` (in recorded order) on ``device``."""
    run_end = []
    for cursor in range(len(levels) + 1):
        end = cursor
        while cursor and end < len(levels) and math.isclose(levels[end], levels[cursor - 1], rel_tol=SIGMA_RTOL):
            end += 1
        run_end.append(end)
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return ReplayTable(torch.tensor(levels, dtype=dtype, device=device), torch.tensor(run_end, device=device),
                       torch.arange(len(levels), device=device))


def _at(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 0-dim device ``index``, gathered on the device (0-dim)."""
    return values.index_select(0, index.reshape(1)).reshape(())


def replayed_index(table: ReplayTable, cursor: Tensor, current: Tensor, sigma: Tensor) -> Tensor:
    """Index (0-dim int64) of the recorded evaluation a model call at ``sigma`` (0-dim) replays, by the module's
    rule; :data:`NO_EVALUATION` when it fits nowhere. ``cursor``: the index after the last closed evaluation;
    ``current``: the evaluation in progress or :data:`NO_EVALUATION` (both 0-dim int64 on ``table``'s device)."""
    levels = table.sigmas
    count = levels.shape[0]
    sigma = sigma.to(levels)
    matches = (levels - sigma).abs() <= (SIGMA_RTOL * torch.maximum(levels.abs(), sigma.abs())).clamp(min=SIGMA_ATOL)
    positions = table.positions
    keeps = (current >= 0) & _at(matches, current.clamp(min=0))
    first_following = torch.where(matches & (positions >= cursor), positions, count).min()
    takes_following = (first_following < count) & (first_following <= _at(table.run_end, cursor))
    repeats = (cursor > 0) & _at(matches, (cursor - 1).clamp(min=0))
    otherwise = torch.where(matches[0], 0, torch.where(repeats, cursor - 1, NO_EVALUATION))
    return torch.where(keeps, current, torch.where(takes_following, first_following, otherwise))


class TrajectoryReplay:
    """The replay of one trajectory over the video pass's model calls, its state on the calls' device.

    Per model call: :meth:`select` (on the device), optionally :meth:`read`; :meth:`latents_at` and
    :meth:`features_at` for what the call is pinned to; after CFG :meth:`evaluation_done`. A host that marks its
    sampling runs calls :meth:`start_run` before and :meth:`verify_run` / :meth:`end_run` after each: then only
    the first :data:`DEPARTURE_CHECKED_EVALUATIONS` evaluations of a run need :meth:`read`; without run marks every
    call is read (:attr:`reads_each_call`).
    """

    def __init__(self, trajectory: FirstFrameTrajectory) -> None:
        self.trajectory = trajectory
        self._levels = [evaluation.sigma for evaluation in trajectory.evaluations]
        self._table: ReplayTable | None = None
        self._cursor = self._current = self._none = self._mismatch = None  # on the table's device
        self._asked = False
        self._departed = False
        self._run_evaluations: int | None = None  # evaluations closed in the marked run; None: no run marks
        self._checked_schedule: Tensor | None = None
        self._latents: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._features: dict[torch.device, StackedFeatures | None] = {}  # None: not stacked in this run

    def check_schedule(self, video_sigmas: Tensor) -> None:
        """Raise unless the video pass samples the trajectory's schedule (same steps and levels). Reads the
        device once per sampling run: a schedule tensor already checked (the sampler hands every call of a run
        the same one) is not read again."""
        if video_sigmas is self._checked_schedule:
            return
        try:
            check_trajectory_sigmas(video_sigmas.new_tensor(self.trajectory.sigmas), video_sigmas, rtol=SIGMA_RTOL)
        except Pix2GifInputError as err:
            raise Pix2GifInputError(f"{err} The trajectory was made with {self.trajectory.settings}.") from None
        self._checked_schedule = video_sigmas

    def start_run(self) -> None:
        """A sampling run begins: the replay starts at the first evaluation; the run's first evaluations are read."""
        self._table, self._asked, self._departed, self._run_evaluations = None, False, False, 0

    def verify_run(self) -> None:
        """After a marked run (one device read): raise if any of its model calls left the recorded order."""
        if self._mismatch is not None:
            sigma, cursor = self._mismatch.tolist()
            if not math.isnan(sigma):
                self._refuse(sigma, int(cursor))

    def end_run(self) -> None:
        """After a marked run, finished or not: frees the run's stacked keys/values; calls are read again."""
        self._features.clear()
        self._run_evaluations = None

    @property
    def reads_each_call(self) -> bool:
        """True while calls must be read: no run marks, or the run's first evaluations."""
        return self._run_evaluations is None or self._run_evaluations < DEPARTURE_CHECKED_EVALUATIONS

    def select(self, sigma: Tensor) -> Tensor:
        """Index (0-dim int64, on ``sigma``'s device) of the evaluation a model call at ``sigma`` (0-dim) replays,
        :data:`NO_EVALUATION` if it left the recorded order (latched). Nothing is read from the device."""
        self._place_state(sigma.device)
        index = replayed_index(self._table, self._cursor, self._current, sigma)
        fresh = (index < 0) & self._mismatch[0].isnan()
        self._mismatch = torch.where(fresh, torch.stack([sigma.to(self._mismatch), self._cursor.to(self._mismatch)]),
                                     self._mismatch)
        self._current, self._asked = index, True
        return index

    def read(self, index: Tensor) -> int:
        """``index`` from :meth:`select` as a Python int (one device read); raises if a call of this run left the
        recorded order (other steps, scheduler, sampler or denoise than the trajectory's)."""
        position, sigma, cursor = torch.cat([index.to(self._mismatch).reshape(1), self._mismatch]).tolist()
        if not math.isnan(sigma):
            self._refuse(sigma, int(cursor))
        if position == 0:
            self._departed = False
        return int(position)

    def evaluation_done(self) -> Tensor | None:
        """Close the evaluation in progress (after CFG) and return its index (0-dim, on the device); the next
        call moves on. None if no call asked for an evaluation since the last one closed."""
        if not self._asked:
            return None
        closed = self._current
        self._cursor = torch.where(closed >= 0, closed + 1, self._cursor)
        self._current, self._asked = self._none, False
        if self._run_evaluations is not None:
            self._run_evaluations += 1
        return closed

    def latents_at(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(state, denoised)`` ``(1, C, h, w)`` of the evaluation at ``index``, gathered on its device (the
        recorded latents are copied there once; a :data:`NO_EVALUATION` index gives evaluation 0's, and the run
        fails at its check)."""
        if index.device not in self._latents:
            evaluations = self.trajectory.evaluations
            self._latents[index.device] = tuple(
                torch.stack([getattr(evaluation, part) for evaluation in evaluations]).to(index.device)
                for part in ("state", "denoised"))
        states, denoised = self._latents[index.device]
        picked = index.clamp(min=0).reshape(1)
        return states.index_select(0, picked)[0], denoised.index_select(0, picked)[0]

    def stack_features(self, device: torch.device, fits: Callable[[int], bool]) -> bool:
        """Copy the recorded keys/values to ``device``, stacked per layer, for the marked run in progress, if
        ``fits(feature_bytes)`` (asked once per run; the trajectory's ``feature_bytes`` stay there until
        :meth:`end_run`); then :meth:`features_at` needs no read. False without a marked run, when they do not fit,
        or when the evaluations do not all carry the same layers."""
        if self._run_evaluations is None:
            return False
        if device not in self._features:
            self._features[device] = None
            if fits(self.trajectory.feature_bytes):
                self._features[device] = stack_features([evaluation.features
                                                         for evaluation in self.trajectory.evaluations], device)
        return self._features[device] is not None

    def features_at(self, index: Tensor, position: int | None) -> FirstFrameFeatures:
        """Recorded keys/values of the evaluation at ``index``: gathered on its device from the run's stack, else
        those of the evaluation at ``position`` (the :meth:`read` index, needed then)."""
        stacked = self._features.get(index.device)
        if stacked is not None:
            return SelectedFeatures(stacked, index.clamp(min=0).reshape(1))
        if position is None:
            raise ValueError("the keys/values are not stacked on the device: read the index first")
        return self.trajectory.evaluations[position].features

    def departs(self, first_frames: Tensor, position: int) -> bool:
        """True once per run, when frame 1 of the sampler's latent ``first_frames`` ``(n, C, h, w)`` leaves the
        recorded state of evaluation ``position`` (read) of a generated trajectory, for one of the first
        :data:`DEPARTURE_CHECKED_EVALUATIONS` evaluations (other start noise, or the fresh noise of an
        ancestral/SDE sampler). Never for inverted trajectories, whose frame 1 starts from the video's own noise,
        and never later in a run (no device read per step)."""
        if self._departed or self.trajectory.origin != "generated" or position >= DEPARTURE_CHECKED_EVALUATIONS:
            return False
        state = self.trajectory.evaluations[position].state.to(first_frames)
        scale = float(state.abs().max()) or 1.0
        self._departed = bool((first_frames - state).abs().max() > DEPARTURE_RTOL * scale)
        return self._departed

    def _place_state(self, device: torch.device) -> None:
        """The replay's table and state on ``device`` (made at the first call after :meth:`start_run`)."""
        if self._table is None:
            self._table = replay_table(self._levels, device)
            self._cursor = torch.zeros((), dtype=torch.int64, device=device)
            self._none = torch.full((), NO_EVALUATION, dtype=torch.int64, device=device)
            self._current = self._none
            self._mismatch = torch.full((2,), math.nan, dtype=self._table.sigmas.dtype, device=device)
        elif self._table.sigmas.device != device:
            self._table = ReplayTable(*(part.to(device) for part in self._table))
            self._cursor, self._current, self._none, self._mismatch = (
                part.to(device) for part in (self._cursor, self._current, self._none, self._mismatch))

    def _refuse(self, sigma: float, cursor: int) -> None:
        self._mismatch = torch.full_like(self._mismatch, math.nan)  # not in place: may be an inference tensor
        evaluations, levels = self.trajectory.evaluations, self.trajectory.sigmas
        expected = f"σ={evaluations[cursor].sigma:.4g}" if cursor < len(evaluations) else "no further evaluation"
        raise Pix2GifInputError(
            f"the video pass evaluates the model at σ={sigma:.4g} where the first-frame trajectory expects "
            f"{expected}: it was made with {self.trajectory.settings} ({len(levels) - 1} steps, σ {levels[0]:.4g} → "
            f"{levels[-1]:.4g}). Use the same steps, scheduler, sampler and denoise in both passes.")
