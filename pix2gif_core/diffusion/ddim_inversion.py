"""Deterministic DDIM inversion of a clean latent, in ComfyUI's k-diffusion σ parametrisation.

A latent at noise level σ is ``x = x0 + σ·ε`` with ``σ = √((1 − ᾱ)/ᾱ)``; the denoiser returns its estimate of
``x0``. ComfyUI's ``euler`` sampler – and its ``ddim`` sampler, which *is* ``euler`` – step from ``σ_i`` down to
``σ_{i+1}`` (``sigmas`` descending, usually ending at 0) with

    ε = (x − D(x, σ_i)) / σ_i,    x ← x + (σ_{i+1} − σ_i)·ε

which for an ε-prediction model is deterministic DDIM (η = 0). :func:`ddim_invert` runs the same step upwards,
from ``σ_{i+1}`` to ``σ_i`` with ε read at the lower level ``σ_{i+1}``; from ``σ = 0`` (the clean latent) ε is
read at the first non-zero level, as DDIM inversion reads the noise of a clean image at its first timestep.
The trajectory is therefore aligned with the same ``sigmas`` a sampler uses: a video pass sampled on the same
sigmas (same sampler, scheduler, steps and denoise) can replace its first frame by ``trajectory[i]`` at step
``i`` (AnimateZero latent insertion, methods.md §3.2, §3.4); :func:`check_trajectory_sigmas` guards that.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from ..errors import Pix2GifInputError

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``(x (B, …), sigma (B,)) → x0 estimate (B, …)`` – the call k-diffusion samplers make (``model(x, σ·s_in)``)."""


def _levels(sigmas: Tensor) -> list[float]:
    """``sigmas`` as floats after checking they are 1-D, finite, ≥ 0 and strictly descending."""
    levels = sigmas.detach().double().flatten().tolist()
    descending = all(high > low for high, low in zip(levels, levels[1:]))
    if sigmas.dim() != 1 or len(levels) < 2 or not descending or min(levels) < 0 or not all(map(math.isfinite, levels)):
        raise Pix2GifInputError(
            f"sigmas must be a 1-D list of at least 2 finite noise levels ≥ 0 in strictly descending order, as a "
            f"scheduler makes them; got {[round(level, 4) for level in levels[:8]]}{'…' if len(levels) > 8 else ''}."
        )
    return levels


def ddim_invert(
    x0: Tensor,
    sigmas: Tensor,
    denoise: Denoiser,
    *,
    progress: Callable[[int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> list[Tensor]:
    """Latent trajectory of ``x0`` at every level of ``sigmas`` (descending, as a sampler uses them).

    Returns a list aligned with ``sigmas``: ``trajectory[i]`` is the latent at ``sigmas[i]``; ``trajectory[-1]``
    is ``x0`` itself (the clean latent when ``sigmas[-1] == 0``, else taken as the latent at ``sigmas[-1]``);
    ``trajectory[0]`` is the inverted noise at ``σ_max``. ``denoise`` is called ``len(sigmas) − 1`` times,
    upwards from the lowest level. ``progress(done, total)`` runs after each step; ``check_cancel()`` runs before
    each denoiser call and raises to stop.
    """
    levels = _levels(sigmas)
    trajectory = [x0] * len(levels)
    total = len(levels) - 1
    x = x0
    for done, index in enumerate(range(total - 1, -1, -1), start=1):
        if check_cancel is not None:
            check_cancel()
        lower, upper = levels[index + 1], levels[index]
        read_at = lower if lower > 0 else upper
        noise = (x - denoise(x, x.new_full((x.shape[0],), read_at))) / read_at
        x = x + (upper - lower) * noise
        trajectory[index] = x
        if progress is not None:
            progress(done, total)
    return trajectory


def check_trajectory_sigmas(recorded: Tensor, video: Tensor, *, rtol: float = 1e-4) -> None:
    """Raise :class:`Pix2GifInputError` unless a first-frame trajectory recorded at ``recorded`` sigmas can be
    replayed in a video pass sampled at ``video`` sigmas (same count, same levels within ``rtol``)."""
    recorded_levels, video_levels = recorded.double().flatten().tolist(), video.double().flatten().tolist()
    if len(recorded_levels) != len(video_levels):
        raise Pix2GifInputError(
            f"the first-frame trajectory was recorded over {len(recorded_levels) - 1} steps but the video pass "
            f"samples {len(video_levels) - 1}; use the same steps, scheduler and denoise for both passes."
        )
    for step, (kept, wanted) in enumerate(zip(recorded_levels, video_levels)):
        if not math.isclose(kept, wanted, rel_tol=rtol, abs_tol=1e-8):
            raise Pix2GifInputError(
                f"the first-frame trajectory was recorded at other noise levels than the video pass samples "
                f"(step {step}: σ={kept:.4g} recorded, σ={wanted:.4g} now); use the same model, sampler, "
                "scheduler, steps and denoise for both passes."
            )
