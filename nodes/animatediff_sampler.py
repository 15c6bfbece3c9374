"""Node: sample a video latent (one latent per frame) with ComfyUI's own samplers, progress and cancel."""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview
import torch

from . import memory_budget
from .animatediff_injection import MOTION_MODEL_KEY
from .i2vgen_xl import I2VGenXLModel
from .conventions import LATENT_CHANNELS, category, display_name, input_error, node_id

NO_MOTION_MODEL = ("no motion model is applied to this MODEL: the frames are independent images, not a clip. For "
                   "animation connect the MODEL through 'Apply Motion Model'")

LATENT_COPIES = 6
"""Clip-sized latents alive at once while sampling: start, noise, x, denoised and the sampler's own."""

logger = logging.getLogger(__name__)


class GifSampler:
    TITLE = "GIF Sampler"
    DESCRIPTION = ("Samples `frames` latents as one video with a motion-patched MODEL (any ComfyUI sampler and "
                   "scheduler). Optional start image or latent: one frame is repeated over the clip, or a full "
                   "clip is used as it is; lower denoise keeps more of it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "frames": ("INT", {"default": 16, "min": 2, "max": 4096,
                                   "tooltip": "Frames of the clip (AnimateDiff: 16 as trained; v1 ≤ 24, v2/v3 ≤ "
                                              "32; more through ComfyUI's Context Windows (Manual))"}),
                "width": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                                  "tooltip": "Ignored when a start image or latent is given"}),
                "height": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                                   "tooltip": "Ignored when a start image or latent is given"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "Seed of the start noise of all frames"}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Denoising steps"}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale"}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "ComfyUI sampler (as in KSampler)"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,
                              {"tooltip": "Noise schedule of the steps (as in KSampler)"}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 = from noise; lower keeps more of the start image or latent"}),
            },
            "optional": {
                "start_latent": ("LATENT", {"tooltip": "1 frame (repeated) or exactly `frames` frames"}),
                "start_image": ("IMAGE", {"tooltip": "Encoded with `vae`; 1 frame (repeated) or `frames` frames"}),
                "vae": ("VAE",),
                "noise": ("LATENT", {"tooltip": "Start noise instead of the seed's (e.g. Motion Noise Prior); "
                                                "exactly `frames` frames of the latent's size"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = category("Sampling")

    def _clip(self, samples: torch.Tensor, frames: int, input_name: str) -> torch.Tensor:
        if samples.shape[0] == 1:
            return samples.repeat(frames, 1, 1, 1)
        if samples.shape[0] != frames:
            raise input_error(self.TITLE, f"{input_name} has {samples.shape[0]} frames but frames is {frames}: "
                                          f"give 1 frame (it is repeated) or exactly {frames}")
        return samples

    def _start(self, frames, width, height, start_latent, start_image, vae) -> torch.Tensor:
        if start_latent is not None and start_image is not None:
            raise input_error(self.TITLE, "connect either start_latent or start_image, not both")
        if start_latent is not None:
            return self._clip(start_latent["samples"], frames, "start_latent")
        if start_image is not None:
            if vae is None:
                raise input_error(self.TITLE, "start_image needs a VAE: connect the checkpoint's VAE to `vae`")
            return self._clip(vae.encode(start_image[:, :, :, :3]), frames, "start_image")
        return torch.zeros(frames, LATENT_CHANNELS, height // 8, width // 8)

    def _given_noise(self, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        if tuple(noise.shape) != tuple(latent.shape):
            frames, _, height, width = latent.shape
            raise input_error(self.TITLE, f"noise has shape {tuple(noise.shape)} but the clip to sample is "
                                          f"{tuple(latent.shape)} ({frames} frames of {width * 8}×{height * 8} px); "
                                          "make the noise from a clip of the same frame count and size")
        return noise

    def _check_memory(self, model, frames: int, latent_hw: tuple[int, int]) -> None:
        """Refuse clips whose latents cannot fit in RAM or whose one model call cannot fit the compute device."""
        height, width = latent_hw
        size = f"{frames} frames of {width * 8}×{height * 8}"
        memory_budget.require(self.TITLE, LATENT_COPIES * frames * LATENT_CHANNELS * height * width * 4,
                              comfy.model_management.intermediate_device(), f"sampling {size}",
                              "lower `frames`, `width` or `height`")
        window = model.model_options.get("context_handler")
        per_call = min(frames, getattr(window, "context_length", frames))
        needed = memory_budget.unet_call_bytes(model, per_call, latent_hw)
        total = comfy.model_management.get_total_memory(model.load_device)
        if needed > total:
            raise input_error(self.TITLE, f"one model call over {per_call} frames of {width * 8}×{height * 8} needs "
                                          f"about {needed / memory_budget.GIB:.1f} GiB, more than the "
                                          f"{total / memory_budget.GIB:.1f} GiB of {model.load_device}; lower "
                                          "`width`/`height`, or `frames` (longer clips: add ComfyUI's 'Context "
                                          "Windows (Manual)' after Apply Motion Model)")

    @staticmethod
    def _latent_size(width, height, start_latent, start_image) -> tuple[int, int]:
        if start_latent is not None:
            return tuple(start_latent["samples"].shape[-2:])
        if start_image is not None:
            return start_image.shape[1] // 8, start_image.shape[2] // 8
        return height // 8, width // 8

    def sample(self, model, positive, negative, frames, width, height, seed, steps, cfg, sampler_name, scheduler,
               denoise, start_latent=None, start_image=None, vae=None, noise=None):
        self._check_memory(model, frames, self._latent_size(width, height, start_latent, start_image))
        latent = self._start(frames, width, height, start_latent, start_image, vae)
        if denoise <= 0.0:  # nothing to denoise: the clip is the start (older hosts divide by denoise)
            return ({"samples": latent},)
        if hasattr(comfy.sample, "fix_empty_latent_channels"):
            latent = comfy.sample.fix_empty_latent_channels(model, latent)
        if noise is None:
            noise = comfy.sample.prepare_noise(latent, seed)
        else:
            noise = self._given_noise(noise["samples"], latent)
        report_step = latent_preview.prepare_callback(model, steps)

        def on_step(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            report_step(step, x0, x, total_steps)

        samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                      denoise=denoise, callback=on_step, disable_pbar=True, seed=seed)
        if MOTION_MODEL_KEY in model.model_options.get("transformer_options", {}) or isinstance(model.model,
                                                                                               I2VGenXLModel):
            return ({"samples": samples},)  # a motion model is applied, or the MODEL is a video model itself
        logger.warning("[%s] %s", self.TITLE, NO_MOTION_MODEL)
        return {"ui": {"text": [NO_MOTION_MODEL]}, "result": ({"samples": samples},)}


NODE_CLASSES = {node_id("GifSampler"): GifSampler}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
