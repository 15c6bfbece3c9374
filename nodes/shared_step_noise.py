"""One step-noise stream for all rows of a batch: ComfyUI's sampler, adding to every latent of the batch at every
stochastic step the noise a run of that single latent would get.

Why (Pix2Gif, methods.md §2.6): the paper's demo re-seeds before every frame, so every magnitude starts from the same
noise *and* gets the same noise at every ancestral / SDE step. A ComfyUI sampling run of ONE latent already does
that – each run seeds its step noise from the seed (ComfyUI ≥ 0.3: a generator seeded per run; 2024-03: the global
generator, which ``comfy.sample.prepare_noise`` has just seeded) – but a run of B latents draws B different rows.

The hook is the SAMPLER object, the one place that sees the noise on all three tested hosts (2024-03, v0.3.75,
v0.33.0): ``WrappersMP.SAMPLER_SAMPLE`` wrappers do not exist on 2024-03, and model options (UNet wrappers,
``sampler_cfg_function``) never see the step noise. ComfyUI's k-diffusion samplers take
``noise_sampler(sigma, sigma_next) → noise`` as a keyword and, when none is given, build their default from the
latent ``x`` they sample: k-diffusion's ``default_noise_sampler(x, seed)`` (``(x)`` on 2024-03) or, for the DPM++
SDE family, ``BrownianTreeNoiseSampler(x, σ_min, σ_max, seed, cpu)``. The wrapped sampler function builds that very
default with the host's own classes on ONE row of ``x`` and repeats its noise across the rows, so row i of a
batch gets exactly the stream of a run of latent i alone; a one-row batch runs the sampler untouched. Samplers
without a ``noise_sampler`` parameter (euler, heun, dpm_2, lms, dpmpp_2m, ipndm, deis, uni_pc, ddim, …) add no
noise in ComfyUI's settings and are returned as they are.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import comfy.k_diffusion.sampling as k_sampling
import comfy.samplers
from torch import Tensor

#: ``(sigma, sigma_next) → noise``: what k-diffusion samplers call at each stochastic step
NoiseSampler = Callable[[Tensor, Tensor], Tensor]
#: samplers whose default step noise is a ``BrownianTreeNoiseSampler``, built on the CPU (their ``_gpu`` variants
#: build it on the latent's device); every other sampler with a ``noise_sampler`` uses ``default_noise_sampler``
BROWNIAN_TREE_SAMPLERS = frozenset({"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"})
GPU_SUFFIX = "_gpu"


def sampler_with_shared_step_noise(sampler_name: str) -> comfy.samplers.KSAMPLER:
    """ComfyUI's sampler ``sampler_name`` (as KSampler builds it, for ``comfy.sample.sample_custom``) whose
    stochastic steps add to every row of the batch the noise a sampling run of that row alone would add."""
    sampler = comfy.samplers.sampler_object(sampler_name)
    sample = sampler.sampler_function
    if "noise_sampler" not in inspect.signature(sample).parameters:
        return sampler

    def sample_with_shared_noise(model, x: Tensor, sigmas: Tensor, **options):
        if x.shape[0] > 1:
            seed = (options.get("extra_args") or {}).get("seed")
            options["noise_sampler"] = repeated_over_rows(one_row_default(sampler_name, x[:1], sigmas, seed),
                                                          x.shape[0])
        return sample(model, x, sigmas, **options)

    return comfy.samplers.KSAMPLER(sample_with_shared_noise, sampler.extra_options, sampler.inpaint_options)


def one_row_default(sampler_name: str, row: Tensor, sigmas: Tensor, seed: int | None) -> NoiseSampler:
    """The noise sampler ``sampler_name`` builds by default when it samples the latent ``row`` (1, C, h, w) over
    ``sigmas`` with ``seed`` – built with the host's own k-diffusion classes, as the sampler builds it."""
    family = sampler_name.removesuffix(GPU_SUFFIX)
    if family in BROWNIAN_TREE_SAMPLERS:
        return k_sampling.BrownianTreeNoiseSampler(row, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed,
                                                   cpu=not sampler_name.endswith(GPU_SUFFIX))
    if "seed" in inspect.signature(k_sampling.default_noise_sampler).parameters:
        return k_sampling.default_noise_sampler(row, seed=seed)
    return k_sampling.default_noise_sampler(row)  # ComfyUI 2024-03: the global generator, as its samplers draw


def repeated_over_rows(noise_sampler: NoiseSampler, rows: int) -> NoiseSampler:
    """``noise_sampler``'s one-row noise (1, …) as the same noise for ``rows`` rows (rows, …), without a copy."""
    def repeated(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        noise = noise_sampler(sigma, sigma_next)
        return noise.expand(rows, *noise.shape[1:])

    return repeated
