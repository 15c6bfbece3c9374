"""Node: the cascade's second stage (I2VGen-XL paper §3; VGen's sr600 recipe, methods.md §6.4) – a base clip
resized to the target size, brought to noise level t (of 1000) and re-sampled from there with a brief text.

The clip (IMAGE, or LATENT decoded first) is scaled to cover the target size and centre-cropped, frame by frame,
and VAE-encoded in frame chunks. ``noise (SDEdit)`` adds the seed's noise at the level's σ; ``DDIM invert`` runs
the pack's deterministic inversion (:func:`~pix2gif_core.diffusion.ddim_inversion.ddim_invert`, cfg 1, with
``inversion_text`` – sr600 inverts with the empty text – or else the positive prompt) up the same noise levels the
sampler then walks down. Both
sample with ComfyUI's own ``comfy.sample.sample`` (the user's sampler and scheduler, KSampler's ``denoise`` =
t/1000). The refiner is an I2VGen-XL MODEL (its image conditioning is rebuilt from the resized clip's first
frame) or an SD1.5 MODEL with the pack's AnimateDiff motion model. The paper's refinement weights were never
released (VGen #49/#86): the public single-stage model or an AnimateDiff model refines.
"""
from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from torch import Tensor

from ..pix2gif_core.diffusion.ddim_inversion import ddim_invert
from ..pix2gif_core.i2vgen_xl.conditioning import cover_crop
from . import memory_budget, vae_chunks
from .animatediff_injection import MOTION_MODEL_KEY
from .animatediff_sampler import LATENT_COPIES
from .conventions import LATENT_CHANNELS, category, display_name, input_error, node_id, reported_as
from .i2vgen_xl import I2VGenXLModel, image_conditioning, step_activation_bytes
from .sampling_session import run_in_sampling, sampler_sigmas

TIMESTEPS = 1000
SDEDIT, DDIM_INVERT = "noise (SDEdit)", "DDIM invert"
MODES = [SDEDIT, DDIM_INVERT]


class I2VGenXLRefine:
    TITLE = "I2VGen-XL Refine"
    DESCRIPTION = (
        "The cascade's refinement stage: the base clip (IMAGE or LATENT) resized to width × height (frames kept), "
        "VAE-encoded, noised to noise_level (t of 1000; 700 as VGen's sr600 recipe) or DDIM-inverted there, and "
        "re-sampled with a brief text by ComfyUI's sampler. Refiner: an I2VGen-XL MODEL (needs clip_vision; its "
        "image conditioning comes from the clip's first frame) or SD1.5 + Apply Motion Model at 512². I2VGen-XL's "
        "own refinement weights were never released (VGen #49/#86): the public single-stage model or an "
        "AnimateDiff model refines.")

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 8192, "step": 8}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "I2VGen-XL (Load I2VGen-XL Model) or SD1.5 + Apply Motion Model"}),
                "positive": ("CONDITIONING", {"tooltip": "brief text (e.g. 'high quality, sharp details')"}),
                "negative": ("CONDITIONING",),
                "vae": ("VAE", {"tooltip": "the VAE of the refiner (KL-f8 for both families)"}),
                "width": ("INT", {"default": 1280, "tooltip": "target width (multiple of 8; I2VGen-XL native 1280, "
                                                              "AnimateDiff 512)", **size}),
                "height": ("INT", {"default": 704, "tooltip": "target height (multiple of 8; I2VGen-XL native "
                                                              "704, AnimateDiff 512)", **size}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 10000,
                                  "tooltip": "steps from the noise level down (sr600: 30)"}),
                "cfg": ("FLOAT", {"default": 9.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "classifier-free guidance of the re-sampling (sr600, VGen: 9)"}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {
                    "default": "dpmpp_2m_sde", "tooltip": "ComfyUI sampler (sr600: dpmpp_2m_sde; euler/ddim walk "
                                                          "a DDIM-inverted clip back exactly)"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {
                    "default": "simple", "tooltip": "noise schedule of the steps (simple ≈ sr600's trailing)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "seed of the SDEdit noise (and of SDE samplers' noise)"}),
                "noise_level": ("INT", {"default": 700, "min": 0, "max": TIMESTEPS, "step": 10,
                                        "tooltip": "timestep t (of 1000) the clip is brought to (KSampler denoise "
                                                   "t/1000); 0 returns the resized clip, 1000 samples from noise"}),
                "mode": (MODES, {"default": SDEDIT,
                                 "tooltip": "SDEdit: add the seed's noise at that level; DDIM invert: invert the "
                                            "clip up to it (sr600's way) with inversion_text"}),
                "fps": ("INT", {"default": 16, "min": 1, "max": 60, "tooltip": "I2VGen-XL's fps condition"}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "the base clip as frames (connect this or latent)"}),
                "latent": ("LATENT", {"tooltip": "the base clip as a LATENT (decoded with vae first)"}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "for an I2VGen-XL refiner: the base stage's CLIP "
                                                           "vision (ViT-H-14)"}),
                "inversion_text": ("CONDITIONING", {"tooltip": "DDIM invert: the text the clip is inverted with "
                                                               "(sr600: a CLIP Text Encode of the empty prompt); "
                                                               "not connected: the positive prompt"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "refine"
    CATEGORY = category("I2VGen-XL")

    def refine(self, model, positive, negative, vae, width, height, steps, cfg, sampler_name, scheduler, seed,
               noise_level, mode, fps, images=None, latent=None, clip_vision=None, inversion_text=None):
        frames = self._check(model, width, height, images, latent, clip_vision)
        self._check_memory(model, frames, width, height, cfg)
        chunks = frames if latent is None else 2 * frames  # frames to encode (and to decode first)
        progress = comfy.utils.ProgressBar(chunks)
        if latent is not None:
            images = vae_chunks.decode_frames(vae, latent["samples"],
                                              lambda count: progress.update_absolute(count, chunks))
        pixels = cover_crop(images[..., :3], width, height)
        encoded = vae_chunks.encode_frames(vae, pixels,
                                           lambda count: progress.update_absolute(chunks - frames + count, chunks))
        if noise_level == 0:
            return ({"samples": encoded},)
        if isinstance(model.model, I2VGenXLModel):
            if inversion_text is not None and mode == DDIM_INVERT:
                inversion_text = image_conditioning(self.TITLE, inversion_text, negative, clip_vision, vae,
                                                    pixels[:1], width, height, frames, fps)[0]
            positive, negative = image_conditioning(self.TITLE, positive, negative, clip_vision, vae, pixels[:1],
                                                    width, height, frames, fps)
        denoise = noise_level / TIMESTEPS
        if mode == DDIM_INVERT:
            text = positive if inversion_text is None else inversion_text
            start, noise = self._inverted(model, text, encoded, steps, sampler_name, scheduler, denoise), None
        else:
            start, noise = encoded, comfy.sample.prepare_noise(encoded, seed)
        report_step = latent_preview.prepare_callback(model, steps)

        def on_step(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            report_step(step, x0, x, total_steps)

        with reported_as(self.TITLE):
            samples = comfy.sample.sample(model, torch.zeros_like(start) if noise is None else noise, steps, cfg,
                                          sampler_name, scheduler, positive, negative, start, denoise=denoise,
                                          callback=on_step, disable_pbar=True, seed=seed)
        return ({"samples": samples},)

    def _check(self, model, width, height, images, latent, clip_vision) -> int:
        """The clip's frame count, after refusing what cannot be refined."""
        if (images is None) == (latent is None):
            raise input_error(self.TITLE, "connect the base clip to exactly one of images (IMAGE) or latent "
                                          f"(LATENT); {'both are' if images is not None else 'neither is'} "
                                          "connected.")
        if width % 8 or height % 8:
            raise input_error(self.TITLE, f"width/height {width}×{height}: give multiples of 8 (the VAE's factor).")
        frames = (images if latent is None else latent["samples"]).shape[0]
        if frames < 2:
            raise input_error(self.TITLE, f"{'images' if latent is None else 'latent'} holds {frames} frame; "
                                          "refinement takes a clip of 2 or more frames (the base stage's output).")
        if isinstance(model.model, I2VGenXLModel):
            if clip_vision is None:
                raise input_error(self.TITLE, "model is I2VGen-XL: connect clip_vision (the base stage's Load "
                                              "CLIP Vision, ViT-H-14) – its first frame conditions the refiner.")
        elif MOTION_MODEL_KEY not in model.model_options.get("transformer_options", {}):
            raise input_error(self.TITLE, "model is neither I2VGen-XL nor motion-patched: refine with Load "
                                          "I2VGen-XL Model, or an SD1.5 MODEL through 'Apply Motion Model' (its "
                                          "frames would be refined one by one otherwise).")
        return frames

    def _check_memory(self, model, frames: int, width: int, height: int, cfg: float) -> None:
        """Refuse before allocating: the resized clip and its latents in RAM, one model call on the compute
        device (I2VGen-XL: the meta-traced step; SD1.5: ComfyUI's per-pixel estimate)."""
        size = f"{frames} frames at {width}×{height}"
        latent_hw = (height // 8, width // 8)
        clip_bytes = frames * (2 * 3 * 4 * height * width + LATENT_COPIES * LATENT_CHANNELS * 4 * latent_hw[0] *
                               latent_hw[1])
        memory_budget.require(self.TITLE, clip_bytes, comfy.model_management.intermediate_device(),
                              f"refining {size}", "lower width/height or the frames of the base clip")
        videos = 1 if cfg == 1.0 else 2
        if isinstance(model.model, I2VGenXLModel):
            unet = model.model.diffusion_model.unet
            needed = step_activation_bytes(unet.config, videos, frames, height, width, model.model.get_dtype())
        else:
            needed = memory_budget.unet_call_bytes(model, videos * frames, latent_hw)
        total = comfy.model_management.get_total_memory(model.load_device)
        if needed > total:
            raise input_error(self.TITLE, f"one model call on {size} needs about {needed / memory_budget.GIB:.1f} "
                                          f"GiB, more than the {total / memory_budget.GIB:.1f} GiB of "
                                          f"{model.load_device}; lower width/height.")

    def _inverted(self, model, text, encoded: Tensor, steps: int, sampler_name: str, scheduler: str,
                  denoise: float) -> Tensor:
        """The clip DDIM-inverted (conditioned on ``text``, cfg 1) up to the first noise level of the sampler's
        schedule, as a LATENT's samples (``comfy.sample`` processes it in again)."""
        sigmas = sampler_sigmas(model, steps, sampler_name, scheduler, denoise)
        progress = comfy.utils.ProgressBar(len(sigmas) - 1)

        def invert(denoiser, x0):
            with torch.no_grad(), reported_as(self.TITLE):
                return ddim_invert(x0, sigmas, denoiser,
                                   progress=lambda done, total: progress.update_absolute(done, total),
                                   check_cancel=comfy.model_management.throw_exception_if_processing_interrupted)[0]

        inverted = run_in_sampling(model, text, encoded, sigmas, invert)
        return model.model.process_latent_out(inverted.to(encoded.device, torch.float32))


NODE_CLASSES = {node_id("I2VGenXLRefine"): I2VGenXLRefine}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
