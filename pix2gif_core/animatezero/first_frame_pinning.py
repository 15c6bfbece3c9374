"""AnimateZero first-frame pinning ("latent insertion", methods.md §3.2, §3.4) in ComfyUI's σ parametrisation.

A :class:`FirstFrameTrajectory` holds every model evaluation of the pass that made the first frame: the noise
level σ, the latent the model saw there (``state``), the x0 estimate it returned (``denoised``) and frame 1's
spatial self-attention keys/values of that evaluation (``features``, :mod:`.first_frame_features`), in the
order the sampler evaluated the model. Two origins:

- ``"generated"``: recorded while a text-to-image pass sampled the image (:class:`TrajectoryRecorder`);
  ``denoised`` is the CFG-combined prediction of that pass;
- ``"inverted"``: from DDIM inversion of a real image's latent (:func:`inverted_trajectory`); ``state`` is the
  inverted latent at each level and ``denoised`` the clean latent itself at every level.

During the video pass the host glue asks a :class:`~.trajectory_replay.TrajectoryReplay` for the evaluation at each
call's σ (found on the device), gives the model :func:`pin_first_frames` of its input with ``state`` and pins
frame 1 of the output to ``denoised``. A denoiser returns x0 and classifier-free guidance combines cond and uncond linearly, so frame 1's
combined prediction is exactly ``denoised``; every sampler's final step to σ = 0 lands on the last denoised
value, so frame 1 ends on the image (bit-exactly when its sampler latent retraces the recorded states, else
within float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from ..errors import Pix2GifInputError
from .first_frame_features import FirstFrameFeatures, feature_bytes

ORIGINS = ("generated", "inverted")
#: relative tolerance within which two noise levels σ are the same
SIGMA_RTOL = 1e-4


@dataclass(frozen=True)
class PinnedEvaluation:
    """One model evaluation of the first frame: noise level, latent seen ``(1, C, h, w)``, x0 returned, and the
    keys/values its spatial self-attention computed (empty when they were not recorded)."""

    sigma: float
    state: Tensor
    denoised: Tensor
    features: FirstFrameFeatures = field(default_factory=dict)


@dataclass(frozen=True)
class FirstFrameTrajectory:
    """How frame 1 is denoised, in model (``process_latent_in``) space.

    ``sigmas``: the schedule the trajectory was made on, descending, final level (usually 0) included;
    ``evaluations``: in sampler order (a σ may repeat, e.g. Heun's predictor and next step);
    ``origin``: one of :data:`ORIGINS`; ``settings``: how it was made, e.g. "4 steps, euler, normal, denoise
    1.0" (named in error messages); ``noise_range``: ``(σ_min, σ_max)`` of the noise schedule it was made with.
    """

    sigmas: tuple[float, ...]
    evaluations: tuple[PinnedEvaluation, ...]
    origin: str
    settings: str
    noise_range: tuple[float, float]

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"origin '{self.origin}' is not one of {ORIGINS}")
        if not self.evaluations:
            raise Pix2GifInputError("the first-frame trajectory is empty: its pass never evaluated the model.")
        shape = self.evaluations[0].state.shape
        for evaluation in self.evaluations:
            if evaluation.state.dim() != 4 or evaluation.state.shape[0] != 1 or (
                    evaluation.state.shape != shape or evaluation.denoised.shape != shape):
                raise Pix2GifInputError(
                    f"the first-frame trajectory must hold one latent (1, C, h, w) per evaluation; got states "
                    f"{tuple(evaluation.state.shape)} and denoised {tuple(evaluation.denoised.shape)}.")

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def has_features(self) -> bool:
        """True when every evaluation carries recorded keys/values."""
        return all(evaluation.features for evaluation in self.evaluations)

    @property
    def feature_bytes(self) -> int:
        """Bytes of recorded keys/values over all evaluations."""
        return sum(feature_bytes(evaluation.features) for evaluation in self.evaluations)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the first-frame latent."""
        return tuple(self.evaluations[0].state.shape[1:])


def inverted_trajectory(x0: Tensor, sigmas: Tensor, states: list[Tensor], *, settings: str,
                        noise_range: tuple[float, float],
                        features: Sequence[FirstFrameFeatures] | None = None) -> FirstFrameTrajectory:
    """Trajectory of a real image from :func:`~pix2gif_core.ddim_inversion.ddim_invert`'s output.

    ``x0`` ``(1, C, h, w)``: the clean latent; ``sigmas``: the levels inverted over (descending, final 0
    included); ``states[i]``: the latent at ``sigmas[i]``; ``features[i]``: frame 1's keys/values of the model
    evaluated on ``states[i]`` at ``sigmas[i]`` (optional). The model is evaluated at every level but the last;
    each returns ``x0``, so any sampler's frame 1 follows ``x0 + σ·(its noise direction)`` down to ``x0``.
    """
    levels = sigmas.double().flatten().tolist()
    if len(states) != len(levels):
        raise ValueError(f"{len(states)} inverted latents for {len(levels)} noise levels")
    if features is None:
        features = [{}] * (len(levels) - 1)
    if len(features) != len(levels) - 1:
        raise ValueError(f"{len(features)} recorded feature sets for {len(levels) - 1} evaluations")
    evaluations = tuple(PinnedEvaluation(level, state, x0, recorded)
                        for level, state, recorded in zip(levels[:-1], states[:-1], features))
    return FirstFrameTrajectory(tuple(levels), evaluations, "inverted", settings, noise_range)


class TrajectoryRecorder:
    """Collects the evaluations of a one-image sampling pass into a ``"generated"`` trajectory."""

    def __init__(self) -> None:
        self._evaluations: list[PinnedEvaluation] = []

    def record(self, sigma: Tensor, state: Tensor, denoised: Tensor,
               features: FirstFrameFeatures | None = None) -> None:
        """One model evaluation: ``sigma`` ``(1,)``, ``state`` the latent ``(1, C, h, w)`` the model saw,
        ``denoised`` the (CFG-combined) x0 estimate ``(1, C, h, w)`` (both copied), ``features`` frame 1's
        recorded keys/values of this evaluation."""
        if state.shape[0] != 1:
            raise Pix2GifInputError(
                f"the first-frame pass must sample one latent, not a batch of {state.shape[0]}.")
        self._evaluations.append(PinnedEvaluation(float(sigma.flatten()[0]), state.detach().clone(),
                                                  denoised.detach().clone(), dict(features or {})))

    def trajectory(self, sigmas: Tensor, *, settings: str, noise_range: tuple[float, float]) -> FirstFrameTrajectory:
        """The recorded evaluations made on the schedule ``sigmas`` (descending, final level included)."""
        return FirstFrameTrajectory(tuple(sigmas.double().flatten().tolist()), tuple(self._evaluations),
                                    "generated", settings, noise_range)


def check_latent_size(trajectory: FirstFrameTrajectory, latent_shape: tuple[int, ...]) -> None:
    """Raise unless video frames ``(C, h, w)`` have the first frame's latent size."""
    expected = trajectory.latent_shape
    if tuple(latent_shape) != expected:
        raise Pix2GifInputError(
            f"the first frame is {expected[2] * 8}×{expected[1] * 8} px ({expected[0]}-channel latent "
            f"{expected[1]}×{expected[2]}) but the video latent is {latent_shape[2] * 8}×{latent_shape[1] * 8} px "
            f"({latent_shape[0]}×{latent_shape[1]}×{latent_shape[2]}); give the video sampler the image's width and "
            "height, or scale the image to the video size before encoding it.")


def pin_first_frames(batch: Tensor, frames: int, first: Tensor) -> Tensor:
    """Copy of ``batch`` ``(videos·frames, C, h, w)`` whose frame 0 of every video is ``first`` ``(1, C, h, w)``."""
    if frames < 1 or batch.shape[0] % frames:
        raise ValueError(f"a batch of {batch.shape[0]} latents is not a whole number of {frames}-frame videos")
    pinned = batch.clone()
    pinned[::frames] = first.to(device=batch.device, dtype=batch.dtype)
    return pinned
