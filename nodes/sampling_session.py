"""ComfyUI's sampling machinery used for work that is not sampling (inversion, training), version-tolerant.

A MODEL's noise schedule and the sigmas a sampler would use are read the way the samplers read them, and work
that needs the model's denoiser runs inside ``comfy.sample.sample_custom`` – so model management, object
patches, conditioning, wrappers and hooks are exactly the sampler's, on ComfyUI 2024-03 and 0.3.x alike.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TypeVar

import comfy.sample
import comfy.samplers
import torch

Result = TypeVar("Result")
#: ``(x (B, C, h, w), sigma (B,)) → x0 estimate``: the call k-diffusion samplers make
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_sampling(model):
    """The MODEL's noise schedule object, its object patches included (e.g. a motion model's beta schedule)."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object("model_sampling")
    patched = model.object_patches.get("model_sampling")
    return patched if patched is not None else model.object_patches_backup.get("model_sampling",
                                                                               model.model.model_sampling)


def noise_range(model) -> tuple[float, float]:
    """(σ_min, σ_max) of the MODEL's schedule."""
    sampling = model_sampling(model)
    return float(sampling.sigma_min), float(sampling.sigma_max)


def sampler_sigmas(model, steps: int, sampler_name: str, scheduler: str, denoise: float) -> torch.Tensor:
    """The noise levels ``comfy.sample.sample`` uses for these settings (KSampler's own computation), on the CPU."""
    owner = model if hasattr(model, "get_model_object") else SimpleNamespace(model_sampling=model_sampling(model))
    return comfy.samplers.KSampler(owner, steps=steps, device="cpu", sampler=sampler_name, scheduler=scheduler,
                                   denoise=denoise).sigmas.cpu()


def run_in_sampling(model, positive, latent: torch.Tensor, sigmas: torch.Tensor,
                    work: Callable[[Denoiser, torch.Tensor], Result], *, negative=None, cfg: float = 1.0) -> Result:
    """``work(denoise, x0)`` run inside ComfyUI's own sampling of ``model``; returns what ``work`` returns.

    ``comfy.sample.sample_custom`` loads the model and calls a custom sampler function with ``x0`` = the
    processed ``latent`` (F, C, h, w) (the start noise is zero) and ``denoise(x, sigma (F,)) → x0 estimate``,
    the sampler's own model call with CFG ``cfg`` against ``negative`` (at cfg 1 ComfyUI skips the unconditional
    pass: one conditional UNet pass on the F frames as one video). ``sigmas`` only has to be a valid descending
    schedule for the sampler.
    """
    outcome = {}

    def sampler_function(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        extra = extra_args or {}
        outcome["result"] = work(lambda noisy, sigma: model_k(noisy, sigma, **extra), x)
        return x

    comfy.sample.sample_custom(model, torch.zeros_like(latent), cfg, comfy.samplers.KSAMPLER(sampler_function),
                               sigmas, positive, positive if negative is None else negative, latent,
                               disable_pbar=True, seed=0)
    return outcome["result"]
