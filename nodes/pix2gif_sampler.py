"""Node: Pix2Gif sampling – one frame per motion magnitude, each an edit of the source image (methods.md §2.6).

How it runs on ComfyUI's own samplers: for each batch of B frames the MODEL is cloned with a UNet function wrapper
that replaces ComfyUI's conditioning by Pix2Gif's three CFG branches – (caption + m, source), ("" + m, source),
("" + m, zero image) – and evaluates them in ONE UNet call of 3B rows, with the FlowNet-warped source latent as the
8 extra input channels and the interval embedding E(m) added to all 77 context tokens. ComfyUI samples at cfg 1,
so it makes no uncond pass of its own. Its ``apply_model`` returns x0 predictions; the 3-way weights
(1 - s_I, s_T, s_I - s_T on ε_u, ε_c, ε_ic) sum to 1, so combining x0 predictions equals combining ε.

Latent spaces: the source latent is ComfyUI's ``VAE.encode`` output, which is *unscaled* – what Pix2Gif feeds the
FlowNet and the concat – while ComfyUI scales x_t by the model's latent format (0.18215) for sampling, as Pix2Gif
does. Pix2Gif works at 256×256 only: another image size is resized to 256×256 (aspect ignored) with a logged
warning, and the frames are resized back to the input size, as the paper's demo does.

Noise: the paper's demo re-seeds before every frame, so every magnitude gets the same start noise and the same noise
at every ancestral / SDE step. Both batch modes do the same: the start noise is the seed's noise of one latent for
every frame, and a batch of frames samples with :func:`~.shared_step_noise.sampler_with_shared_step_noise`, which
adds to each frame the step noise of a run of that frame alone – so "all frames in one batch" gives the frames of
"one frame at a time" with every sampler.
"""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview
import torch
import torch.nn.functional as F

from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.pix2gif.checkpoint import PIX2GIF_UNET_IN_CHANNELS
from ..pix2gif_core.pix2gif.conditioning import (
    DEFAULT_IMAGE_CFG,
    DEFAULT_MAGNITUDES,
    DEFAULT_TEXT_CFG,
    NULL_PROMPT,
    TRAINED_MAGNITUDE_RANGE,
    CfgBatch,
    cfg_batch,
    combine_three_way_cfg,
    motion_prompt,
    parse_magnitudes,
)
from ..pix2gif_core.pix2gif.flownet import IMAGE_SIZE, LATENT_SIZE, motion_guided_concat, require_pix2gif_latent
from . import memory_budget
from .conventions import category, display_name, node_id, reported_as
from .pix2gif_model import PIX2GIF_MOTION_TYPE, Pix2GifMotion
from .sampling_session import sampler_sigmas
from .shared_step_noise import sampler_with_shared_step_noise

BATCH_MODES = ("all frames in one batch", "one frame at a time")
DEFAULT_SEED = 1371
DEFAULT_STEPS = 100
#: ComfyUI's CFG++ samplers: they ask for the model's unconditional prediction beside the conditional one
CFG_PP_SUFFIX = "_cfg_pp"
_BRANCHES = 3


def encode_prompt(clip, text: str) -> torch.Tensor:
    """CLIP context (1, 77, C) of ``text``; longer prompts are refused (Pix2Gif's CLIP reads one 77-token window)."""
    tokens = clip.tokenize(text)
    if max(len(chunks) for chunks in tokens.values()) > 1:
        raise Pix2GifInputError(
            f"caption: the prompt {text!r} is longer than CLIP's 77 tokens, and its end (the motion magnitude) would"
            " be cut off; shorten the caption.")
    return clip.encode_from_tokens(tokens)


def three_way_cfg_wrapper(context: torch.Tensor, concat: torch.Tensor, text_cfg: float, image_cfg: float,
                          previous=None):
    """UNet function wrapper running the 3 CFG branches of B frames as one UNet call of 3B rows.

    ``context`` (3B, 77, C) and ``concat`` (3B, 8, h, w) are stacked as :func:`cfg_batch` stacks them; ComfyUI's
    own ``c_crossattn`` is ignored. ``previous``: a wrapper the MODEL already had, called with the 3B-row batch.
    Make one wrapper per sampling run: it moves ``context`` and ``concat`` to the device and dtype of the latents
    the sampler gives it once, at its first call, and hands the UNet those same tensors at every later call.
    """
    frames = context.shape[0] // _BRANCHES
    placed: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def wrapper(apply_model, args):
        x, timestep, conditioning = args["input"], args["timestep"], args["c"]
        if x.shape[0] != frames:
            raise RuntimeError(f"Pix2Gif Sampler: the sampler evaluated {x.shape[0]} latents at once, expected the "
                               f"{frames} frames of this batch")
        if (x.device, x.dtype) not in placed:
            placed[x.device, x.dtype] = concat.to(x), context.to(x)
        c_concat, c_crossattn = placed[x.device, x.dtype]
        options = {**conditioning.get("transformer_options", {}), "cond_or_uncond": [0, 1, 1]}
        rows = {**{k: v for k, v in conditioning.items() if k not in ("c_crossattn", "c_concat")},
                "c_concat": c_concat, "c_crossattn": c_crossattn, "transformer_options": options}
        x_rows, t_rows = torch.cat([x] * _BRANCHES), torch.cat([timestep] * _BRANCHES)
        if previous is not None:
            denoised = previous(apply_model, {"input": x_rows, "timestep": t_rows, "c": rows,
                                              "cond_or_uncond": options["cond_or_uncond"]})
        else:
            denoised = apply_model(x_rows, t_rows, **rows)
        conditional, image_only, unconditional = denoised.chunk(_BRANCHES)
        return combine_three_way_cfg(conditional, image_only, unconditional, text_cfg, image_cfg)

    return wrapper


def resized(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE (B, H, W, C) in [0, 1] → (B, height, width, C): bicubic with antialiasing, clamped; computed in
    float32 (half-precision antialiased resizing is missing on CPUs), returned in ``images``' dtype."""
    out = F.interpolate(images.movedim(-1, 1).float(), size=(height, width), mode="bicubic", antialias=True,
                        align_corners=False)
    return out.clamp(0.0, 1.0).movedim(1, -1).to(images.dtype)


class Pix2GifSampler:
    TITLE = "Pix2Gif Sampler"
    DESCRIPTION = ("Pix2Gif: one frame per motion magnitude, each generated from the source image with the "
                   "caption + 'The optical flow is <m>.', the same seed, and 3-way guidance (text / image). "
                   "Works at 256×256 (other sizes are resized there and back). Frames go to Save Animation.")

    @classmethod
    def INPUT_TYPES(cls):
        low, high = TRAINED_MAGNITUDE_RANGE
        return {"required": {
            "model": ("MODEL",),
            "clip": ("CLIP",),
            "vae": ("VAE",),
            "pix2gif_motion": (PIX2GIF_MOTION_TYPE,),
            "image": ("IMAGE", {"tooltip": "One source image; resized to 256×256 if needed"}),
            "caption": ("STRING", {"multiline": True, "default": "clouds drift over a house on green hills",
                                   "tooltip": "What the image shows and how it moves"}),
            "magnitudes": ("STRING", {"default": DEFAULT_MAGNITUDES,
                                      "tooltip": f"One frame per comma-separated integer (0–1023; trained "
                                                 f"{low}–{high}): the optical-flow magnitude in pixels at 256×256"}),
            "seed": ("INT", {"default": DEFAULT_SEED, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "The same seed for every frame: the same start noise and the "
                                        "same noise at every step, as the paper's demo re-seeds per frame"}),
            "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 10000,
                              "tooltip": "Denoising steps (the paper: 100)"}),
            "text_cfg": ("FLOAT", {"default": DEFAULT_TEXT_CFG, "min": 0.0, "max": 100.0, "step": 0.1,
                                   "round": 0.01, "tooltip": "Text guidance scale s_T"}),
            "image_cfg": ("FLOAT", {"default": DEFAULT_IMAGE_CFG, "min": 0.0, "max": 100.0, "step": 0.1,
                                    "round": 0.01, "tooltip": "Image guidance scale s_I"}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler_ancestral",
                                                                "tooltip": "ComfyUI sampler (as in KSampler)"}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS,
                          {"default": "normal", "tooltip": "Noise schedule of the steps (as in KSampler)"}),
            "batch_mode": (list(BATCH_MODES), {"default": BATCH_MODES[0],
                                               "tooltip": "One sampling run for all frames (faster on a GPU), or one "
                                                          "run per frame (less memory); the same frames either way"}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "sample"
    CATEGORY = category("Pix2Gif")

    @staticmethod
    def _check_model(model) -> None:
        channels = model.model.model_config.unet_config.get("in_channels")
        if channels != PIX2GIF_UNET_IN_CHANNELS:
            raise Pix2GifInputError(f"model: this MODEL's UNet takes {channels} input channels, Pix2Gif's takes "
                                    f"{PIX2GIF_UNET_IN_CHANNELS} (noisy | source | warped latents); connect the model "
                                    "output of 'Load Pix2Gif Model'")

    @staticmethod
    def _check_sampler(sampler_name: str) -> None:
        if sampler_name.endswith(CFG_PP_SUFFIX):
            raise Pix2GifInputError(f"sampler_name '{sampler_name}': CFG++ samplers need ComfyUI's own unconditional "
                                    "pass, which Pix2Gif's 3-way guidance (text / image) replaces; use "
                                    f"'{sampler_name.removesuffix(CFG_PP_SUFFIX)}'")

    def _source(self, image: torch.Tensor) -> torch.Tensor:
        """The one source image (1, 256, 256, 3), resized with a warning when it has another size."""
        if image.shape[0] != 1:
            raise Pix2GifInputError(f"image: got a batch of {image.shape[0]} images; Pix2Gif animates one source "
                                    "image (pick one, e.g. with 'ImageFromBatch')")
        height, width = image.shape[1:3]
        if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
            return image[..., :3]
        logging.warning("[%s] image is %d×%d; Pix2Gif works at %d×%d only: resizing it (aspect ratio ignored, as "
                        "the paper's demo does) and the frames back to %d×%d", self.TITLE, width, height,
                        IMAGE_SIZE, IMAGE_SIZE, width, height)
        return resized(image[..., :3], IMAGE_SIZE, IMAGE_SIZE)

    def sample(self, model, clip, vae, pix2gif_motion: Pix2GifMotion, image, caption, magnitudes, seed, steps,
               text_cfg, image_cfg, sampler_name, scheduler, batch_mode):
        with reported_as(self.TITLE):
            values = parse_magnitudes(magnitudes, "magnitudes")
            self._check_model(model)
            self._check_sampler(sampler_name)
            low, high = TRAINED_MAGNITUDE_RANGE
            if any(not low <= value <= high for value in values):
                logging.warning("[%s] magnitudes %s: the model was trained on %d–%d; others are extrapolation",
                                self.TITLE, values, low, high)
            texts = torch.cat([encode_prompt(clip, motion_prompt(caption, value)) for value in values])
            null_text = encode_prompt(clip, NULL_PROMPT)
            source_latent = vae.encode(self._source(image))
            require_pix2gif_latent(source_latent, "VAE-encoded source image")
            device = pix2gif_motion.load()
            with torch.no_grad():
                interval = pix2gif_motion.interval_embedding(torch.tensor(values, device=device)).to(texts)
            rows = self._frames_per_call(model, len(values)) if batch_mode == BATCH_MODES[0] else 1
            groups = [list(range(start, min(start + rows, len(values)))) for start in range(0, len(values), rows)]
            report = latent_preview.prepare_callback(model, steps * len(groups))
            latents = []
            for number, group in enumerate(groups):
                comfy.model_management.throw_exception_if_processing_interrupted()
                branches = cfg_batch(texts[group], null_text, interval[group],
                                     source_latent.expand(len(group), -1, -1, -1))

                def on_step(step, x0, x, total_steps, number=number):
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    report(number * total_steps + step, x0, x, total_steps * len(groups))

                latents.append(self._sample_group(model, pix2gif_motion, branches, seed, steps, text_cfg, image_cfg,
                                                  sampler_name, scheduler, on_step))
        frames = vae.decode(torch.cat(latents))[..., :3]
        height, width = image.shape[1:3]
        return (frames if frames.shape[1:3] == (height, width) else resized(frames, height, width),)

    def _frames_per_call(self, model, frames: int) -> int:
        """All ``frames`` in one UNet call (3 rows each) if the compute device has the memory, else as many as fit:
        every frame gets the same noise, so the split changes nothing but the memory."""
        per_frame = memory_budget.unet_call_bytes(model, _BRANCHES, (LATENT_SIZE, LATENT_SIZE))
        fitting = int(memory_budget.USABLE_FRACTION * memory_budget.free_bytes(model.load_device) // per_frame)
        if fitting >= frames:
            return frames
        rows = max(1, fitting)
        logging.info("[%s] %d frames in batches of %d (the memory free on %s)", self.TITLE, frames, rows,
                     model.load_device)
        return rows

    @staticmethod
    def _sample_group(model, motion: Pix2GifMotion, branches: CfgBatch, seed, steps, text_cfg, image_cfg,
                      sampler_name, scheduler, on_step) -> torch.Tensor:
        """Sample the B frames of ``branches`` with the same start noise and the same noise at every step; returns
        (B, 4, 32, 32) latents."""
        count = branches.context.shape[0] // _BRANCHES
        device = motion.patcher.load_device
        with torch.no_grad():
            concat = motion_guided_concat(motion.flownet, branches.source_latent.to(device),
                                          branches.context.to(device))
        patched = model.clone()
        patched.set_model_unet_function_wrapper(three_way_cfg_wrapper(
            branches.context, concat, text_cfg, image_cfg, model.model_options.get("model_function_wrapper")))
        latent = torch.zeros(count, *branches.source_latent.shape[1:])
        noise = comfy.sample.prepare_noise(latent[:1], seed).expand_as(latent).contiguous()
        positive = [[branches.context[:count], {}]]
        negative = [[branches.context[count:2 * count], {}]]  # unused at cfg 1; keeps ComfyUI's inputs well-formed
        return comfy.sample.sample_custom(patched, noise, 1.0, sampler_with_shared_step_noise(sampler_name),
                                          sampler_sigmas(patched, steps, sampler_name, scheduler, 1.0), positive,
                                          negative, latent, callback=on_step, disable_pbar=True, seed=seed)


NODE_CLASSES = {node_id("Pix2GifSampler"): Pix2GifSampler}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
