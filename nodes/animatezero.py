"""Nodes: AnimateZero (methods.md §3) – a first frame and its trajectory, and the patch that animates it.

- *AnimateZero First Frame* samples the image with the plain SD1.5 MODEL and records, for every model
  evaluation, the latent the model saw and the CFG-combined x0 it returned (a post-CFG hook of a clone), and
  the keys/values of every spatial self-attention per CFG branch (``attn1_replace`` patches that record and
  attend exactly as the host would);
- *AnimateZero Invert Image* makes that trajectory for a real image by DDIM inversion, running
  :func:`~pix2gif_core.diffusion.ddim_inversion.ddim_invert` as a sampler through ``comfy.sample.sample_custom`` (so the
  denoiser is ComfyUI's own model call with CFG), recording the keys/values of each evaluated latent alike;
- *AnimateZero* patches a motion-patched MODEL: a UNet function wrapper (chained in front of the motion
  model's) replaces frame 1 of every video in each UNet input by the recorded latent and frame 1 of the output
  by the recorded x0 and hands the evaluation's recorded keys/values to the attention patches, a post-CFG hook
  pins frame 1 of the combined prediction and closes the evaluation; ``attn1_replace`` patches make every frame
  attend to frame 1's keys/values (the image pass's, or the video's own frame 1); the chosen motion modules get
  positional-corrected window attention through :func:`set_temporal_variants`. All attention runs through the
  host's ``optimized_attention`` (:func:`~.attention_backend.host_attention`). The evaluation each call replays is
  found on the device (:mod:`~pix2gif_core.animatezero.trajectory_replay`); on ComfyUI ≥ 0.3 an outer-sample
  wrapper marks each sampling run, so the device is read in the run's first evaluations and once after it only.

Both trajectory nodes sample on the noise schedule of their ``beta_schedule`` option, which must be the one
Apply Motion Model gives the video MODEL: the video pass finds frame 1's latents by noise level σ.
"""
from __future__ import annotations

import logging
import math
from typing import NamedTuple

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
import comfy.ldm.modules.attention as comfy_attention

from ..pix2gif_core.animatezero.first_frame_features import (FeatureRecorder, FirstFrameFeatures, LayerKey,
                                                             first_frame_anchors)
from ..pix2gif_core.animatezero.first_frame_pinning import (FirstFrameTrajectory, TrajectoryRecorder,
                                                            check_latent_size, inverted_trajectory, pin_first_frames)
from ..pix2gif_core.animatezero.shared_kv_attention import SHARING_MODES, in_sigma_range, shared_kv_attention
from ..pix2gif_core.animatezero.trajectory_replay import TrajectoryReplay
from ..pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention
from ..pix2gif_core.diffusion.ddim_inversion import ddim_invert
from ..pix2gif_core.errors import Pix2GifInputError
from . import memory_budget
from .animatediff import BETA_SCHEDULES
from .animatediff_injection import MOTION_MODEL_KEY, injected_motion_modules, schedule_patch, set_temporal_variants
from .attention_backend import host_attention
from .conventions import LATENT_CHANNELS, category, display_name, input_error, node_id, reported_as
from .sampling_session import model_sampling, noise_range, run_in_sampling, sampler_sigmas

logger = logging.getLogger(__name__)

TRAJECTORY_TYPE = "PIX2GIF_TRAJECTORY"
KV_MODES = (*SHARING_MODES, "off")
#: where frame 1's keys/values come from: the pass that made the first frame (paper), or the video's own frame 1
KV_SOURCES = ("image pass", "video pass")
#: transformer_options key under which the video wrapper hands the evaluation's recorded keys/values to attn1
FEATURES_OPTION = "pix2gif_first_frame_features"
#: block range choice → parts of the UNet ("down" = input blocks / encoder, "mid", "up" = output blocks / decoder)
BLOCK_RANGES = {"all": ("down", "mid", "up"), "down": ("down",), "mid": ("mid",), "up": ("up",),
                "down+mid": ("down", "mid"), "mid+up": ("mid", "up"), "down+up": ("down", "up")}
UNET_BLOCKS = {"down": "input", "mid": "middle", "up": "output"}
MOTION_MODULE_PREFIXES = {"down": "down_blocks.", "mid": "mid_block.", "up": "up_blocks."}
#: ComfyUI samplers (name prefixes) that evaluate the model between the levels of their schedule
BETWEEN_LEVEL_SAMPLERS = ("dpm_2", "dpmpp_2s", "dpmpp_sde", "dpm_fast", "dpm_adaptive")
#: parts of ComfyUI sampler names that add fresh noise at every step
STOCHASTIC_SAMPLER_MARKS = ("ancestral", "sde", "ddpm", "lcm", "seeds", "sa_solver")
DEFAULT_BETA_SCHEDULE = "sqrt_linear (AnimateDiff)"
#: the recorded keys/values go to the compute device for a sampling run when they take at most this share of its
#: free memory (else they stay where the trajectory keeps them and each UNet call reads its evaluation's index)
KV_SHARE_OF_FREE_MEMORY = 0.5
#: key of the outer-sample wrapper that marks the sampling runs of the replay (ComfyUI ≥ 0.3)
REPLAY_RUN_WRAPPER_KEY = "pix2gif_animatezero_replay"
BETA_SCHEDULE_TOOLTIP = ("Noise schedule of this pass: choose the beta_schedule of Apply Motion Model on the video "
                         "MODEL, so both passes share noise levels")


def _image_model(model, beta_schedule: str):
    """A clone of the plain SD1.5 ``model`` sampling on ``beta_schedule``; refuses a motion-patched MODEL."""
    if MOTION_MODEL_KEY in model.model_options.get("transformer_options", {}):
        raise Pix2GifInputError(
            "the MODEL carries a motion model; connect the checkpoint's MODEL itself: the first frame is one "
            "image made by SD1.5 alone (its beta_schedule option matches the video's noise levels)")
    clone = model.clone()
    schedule = BETA_SCHEDULES[beta_schedule]
    if schedule is not None:
        clone.add_object_patch("model_sampling", schedule_patch(model, schedule))
    return clone


def _settings(steps: int, sampler_name: str, scheduler: str, denoise: float) -> str:
    return f"{steps} steps, sampler {sampler_name}, scheduler {scheduler}, denoise {denoise:g}"


def _to_intermediate_device(latent: torch.Tensor) -> torch.Tensor:
    """Where ComfyUI keeps latents between nodes (the CPU unless --gpu-only)."""
    return latent.to(comfy.model_management.intermediate_device())


class AnimateZeroFirstFrame:
    TITLE = "AnimateZero First Frame"
    DESCRIPTION = (
        "Samples the first frame with the plain SD1.5 MODEL and records its trajectory (the latent the model saw "
        "and the image it predicted at every step) for the AnimateZero patch. Give the GIF Sampler the same "
        "seed, steps, sampler, scheduler and size: the video's frame 1 then starts from this pass's noise, "
        "retraces it and ends exactly on this latent. Ancestral/SDE samplers add fresh noise at every step: "
        "frame 1 still ends on the image, but only within float rounding (a warning says so).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The checkpoint's MODEL, without motion model"}),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "width": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                              "tooltip": "Same as the video pass"}),
            "height": ("INT", {"default": 512, "min": 64, "max": 8192, "step": 8,
                               "tooltip": "Same as the video pass"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "The GIF Sampler's seed gives its frame 1 this pass's start noise"}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Same as the video pass"}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale of the image"}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "Same as the video pass"}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Same as the video pass"}),
            "beta_schedule": (list(BETA_SCHEDULES), {"default": DEFAULT_BETA_SCHEDULE,
                                                     "tooltip": BETA_SCHEDULE_TOOLTIP}),
        }}

    RETURN_TYPES = ("LATENT", TRAJECTORY_TYPE)
    RETURN_NAMES = ("latent", "trajectory")
    FUNCTION = "sample"
    CATEGORY = category("AnimateZero")

    def sample(self, model, positive, negative, width, height, seed, steps, cfg, sampler_name, scheduler,
               beta_schedule):
        with reported_as(self.TITLE):
            image_model = _image_model(model, beta_schedule)
        if any(mark in sampler_name for mark in STOCHASTIC_SAMPLER_MARKS):
            logger.warning("[%s] sampler '%s' adds fresh noise at every step: the video pass cannot retrace frame "
                           "1's latents, so frame 1 ends on this image within float rounding, not bit-exactly",
                           self.TITLE, sampler_name)
        recorder, features = TrajectoryRecorder(), FeatureRecorder(_to_intermediate_device)
        _record_spatial_kv(image_model, features)

        def record(args):
            stored = _to_intermediate_device
            recorder.record(args["sigma"], stored(args["input"]), stored(args["denoised"]), features.take())
            return args["denoised"]

        image_model.set_model_sampler_post_cfg_function(record)
        latent = torch.zeros(1, LATENT_CHANNELS, height // 8, width // 8)
        if hasattr(comfy.sample, "fix_empty_latent_channels"):
            latent = comfy.sample.fix_empty_latent_channels(image_model, latent)
        # Frame 0 of a 2-frame draw equals frame 0 of the GIF Sampler's n-frame draw with the same seed for every
        # latent of ≥ 4 pixels; a 1-frame draw differs when 4·h·w is not a multiple of 16 (torch's CPU normal
        # generator fills blocks of 16 and redraws a short tail).
        noise = comfy.sample.prepare_noise(latent.repeat(2, 1, 1, 1), seed)[:1]
        preview = latent_preview.prepare_callback(image_model, steps)

        def on_step(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            preview(step, x0, x, total_steps)

        samples = comfy.sample.sample(image_model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                      latent, denoise=1.0, callback=on_step, disable_pbar=True, seed=seed)
        with reported_as(self.TITLE):
            trajectory = recorder.trajectory(sampler_sigmas(image_model, steps, sampler_name, scheduler, 1.0),
                                             settings=_settings(steps, sampler_name, scheduler, 1.0),
                                             noise_range=noise_range(image_model))
        return ({"samples": samples}, trajectory)


class AnimateZeroInvert:
    TITLE = "AnimateZero Invert Image"
    DESCRIPTION = (
        "DDIM-inverts the latent of a real image (VAE Encode) with the plain SD1.5 MODEL, at the noise levels the "
        "video pass will sample (same steps, sampler, scheduler, denoise), and returns the trajectory for the "
        "AnimateZero patch: at every level frame 1 is the inverted latent and the model's prediction for it is "
        "the image latent itself, so with ANY sampler the video's frame 1 ends on the image (within float "
        "rounding). The video's own seed noise is used as frame 1's start; the inverted noise need not be passed "
        "on.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The checkpoint's MODEL, without motion model"}),
                "positive": ("CONDITIONING", {"tooltip": "A prompt describing the image"}),
                "latent": ("LATENT", {"tooltip": "One image, encoded with VAE Encode"}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Same as the video pass"}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {
                    "tooltip": "The video pass's sampler: only its noise levels matter (dpm_2 and uni_pc use their "
                               "own); samplers that evaluate between levels (dpm_2, dpmpp_2s/sde, dpm_fast/"
                               "adaptive) cannot replay an inverted trajectory"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "Same as the video pass"}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Same as the video pass"}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "1 = prompt only (the usual DDIM inversion); other values need "
                                             "`negative`"}),
                "beta_schedule": (list(BETA_SCHEDULES), {"default": DEFAULT_BETA_SCHEDULE,
                                                         "tooltip": BETA_SCHEDULE_TOOLTIP}),
            },
            "optional": {"negative": ("CONDITIONING",)},
        }

    RETURN_TYPES = (TRAJECTORY_TYPE,)
    RETURN_NAMES = ("trajectory",)
    FUNCTION = "invert"
    CATEGORY = category("AnimateZero")

    def invert(self, model, positive, latent, steps, sampler_name, scheduler, denoise, cfg, beta_schedule,
               negative=None):
        image = latent["samples"]
        if image.shape[0] != 1:
            raise input_error(self.TITLE, f"latent holds {image.shape[0]} images; connect the latent of one image "
                                          "(e.g. pick it with ImageFromBatch before VAE Encode)")
        if negative is None and not math.isclose(cfg, 1.0):
            raise input_error(self.TITLE, f"cfg {cfg:g} needs `negative`: connect a negative prompt or set cfg to 1")
        if sampler_name.startswith(BETWEEN_LEVEL_SAMPLERS):
            raise input_error(self.TITLE, f"sampler_name '{sampler_name}' evaluates the model between the noise "
                                          "levels, where an inverted trajectory has no latent to replay: use a "
                                          "sampler that steps from level to level (euler, ddim, dpmpp_2m, heun, "
                                          "lms, …) here and in the video pass")
        with reported_as(self.TITLE):
            image_model = _image_model(model, beta_schedule)
        sigmas = sampler_sigmas(image_model, steps, sampler_name, scheduler, denoise)
        progress = comfy.utils.ProgressBar(len(sigmas) - 1)
        recorder = FeatureRecorder(_to_intermediate_device)
        _record_spatial_kv(image_model, recorder)

        def invert(denoise, x0):
            """``x0`` is the processed image latent; the trajectory from it up to the highest level and the
            keys/values of each evaluation. ddim_invert's call c (c ≥ 1) evaluates the model on latent
            ``states[steps − c]`` at that level; call 0 sees the clean latent; the top level needs one more call."""
            calls = []

            def recording(x, sigma):
                denoised = denoise(x, sigma)
                calls.append(recorder.take())
                return denoised

            with torch.no_grad(), reported_as(self.TITLE):
                states = ddim_invert(x0, sigmas, recording,
                                     progress=lambda done, total: progress.update_absolute(done, total),
                                     check_cancel=comfy.model_management.throw_exception_if_processing_interrupted)
                comfy.model_management.throw_exception_if_processing_interrupted()
                denoise(states[0], sigmas[:1].to(states[0]).expand(states[0].shape[0]))
            return states, [recorder.take(), *reversed(calls[1:])]

        inverted, features = run_in_sampling(image_model, positive, image, sigmas, invert, negative=negative, cfg=cfg)
        states = [_to_intermediate_device(state) for state in inverted]
        trajectory = inverted_trajectory(states[-1], sigmas, states,
                                         settings=_settings(steps, sampler_name, scheduler, denoise),
                                         noise_range=noise_range(image_model), features=features)
        return (trajectory,)


def _spatial_attention_positions(model, parts: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """``(block kind, block index, transformer index)`` of every spatial self-attention in ``parts`` of the UNet."""
    unet = model.model.diffusion_model
    blocks = {"input": list(enumerate(unet.input_blocks)), "middle": [(0, unet.middle_block)],
              "output": list(enumerate(unet.output_blocks))}
    return [(UNET_BLOCKS[part], index, depth)
            for part in parts for index, block in blocks[UNET_BLOCKS[part]]
            for layer in block.children() if isinstance(layer, comfy_attention.SpatialTransformer)
            for depth in range(len(layer.transformer_blocks))]


def _layer(extra_options: dict) -> LayerKey:
    """The ``attn1`` position of the calling layer, as ComfyUI names it: (block kind, block index, depth)."""
    kind, index = extra_options["block"][:2]
    return (kind, index, extra_options.get("block_index", 0))


def _host_attention(extra_options: dict, q, k, v):
    """The spatial self-attention the host computes itself (same function, looked up per call, heads and
    precision)."""
    precision = {"attn_precision": extra_options["attn_precision"]} if "attn_precision" in extra_options else {}
    return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"], **precision)


def _record_spatial_kv(model, recorder: FeatureRecorder) -> None:
    """``attn1_replace`` patches on every spatial self-attention of ``model`` that record the keys/values per CFG
    branch and attend exactly as the host does (the image pass's result is unchanged)."""

    def attention(q, k, v, extra_options):
        recorder.record(extra_options["cond_or_uncond"], _layer(extra_options), k, v)
        return _host_attention(extra_options, q, k, v)

    for kind, index, depth in _spatial_attention_positions(model, ("down", "mid", "up")):
        model.set_model_attn1_replace(attention, kind, index, depth)


def _shared_kv_patch(mode: str, source: str, sigma_range: tuple[float, float] | None):
    """``attn1_replace`` patch: every frame attends to frame 1's keys/values (recorded ones for ``source`` "image
    pass", where the evaluation has them) while ``sigma_end ≤ σ ≤ sigma_start`` (``sigma_range``; None = the
    whole denoising), else to its own as the host's attention does. The range is decided once per UNet call
    (every layer of a call gets the same ``sigmas`` tensor) by :func:`in_sigma_range`: on an accelerator on the
    device, σ never read."""
    kernels, decided = {}, [None, None]  # the last call's sigmas tensor and whether it shares

    def sharing(sigmas):
        if sigma_range is None or sigmas is None:
            return None
        if sigmas is not decided[0]:
            decided[:] = [sigmas, in_sigma_range(sigmas, sigma_range)]
        return decided[1]

    def attention(q, k, v, extra_options):
        active = sharing(extra_options.get("sigmas"))
        if active is False:
            return _host_attention(extra_options, q, k, v)
        precision = extra_options.get("attn_precision")
        kernel = kernels.get(precision) or kernels.setdefault(precision, host_attention(precision))
        branches = extra_options.get("cond_or_uncond") or [0]
        frames = q.shape[0] // len(branches)
        anchors = None
        if source == "image pass":
            anchor_k, anchor_v, _ = first_frame_anchors(k, v, frames, branches, _layer(extra_options),
                                                        extra_options.get(FEATURES_OPTION, {}))
            anchors = (anchor_k, anchor_v)
        return shared_kv_attention(q, k, v, extra_options["n_heads"], frames, mode, kernel=kernel, anchors=anchors,
                                   active=active)

    return attention


def _window_variants(model, window_length: int, window_blocks: str) -> dict:
    parts = BLOCK_RANGES[window_blocks]
    names = [name for name in injected_motion_modules(model)
             if name.startswith(tuple(MOTION_MODULE_PREFIXES[part] for part in parts))]
    if not names:
        raise Pix2GifInputError(
            f"window_blocks '{window_blocks}' selects no motion module of this motion model (v1 and v3 have no "
            "mid-block module); choose blocks that include 'down' or 'up'")
    return dict.fromkeys(names, PositionCorrectedWindowAttention(window_length or None, kernel=host_attention()))


def _check_noise_levels(trajectory: FirstFrameTrajectory, model) -> None:
    (low, high), (made_low, made_high) = noise_range(model), trajectory.noise_range
    if not (math.isclose(low, made_low, rel_tol=1e-4) and math.isclose(high, made_high, rel_tol=1e-4)):
        raise Pix2GifInputError(
            f"the trajectory was made with noise levels σ {made_low:.4g}…{made_high:.4g} but this MODEL samples "
            f"σ {low:.4g}…{high:.4g}: set beta_schedule of the node that made the trajectory to the beta_schedule "
            "of Apply Motion Model")


def _check_frames(frames: int, window_length: int) -> None:
    if frames < 2:
        raise Pix2GifInputError(
            f"the video latent has {frames} frame; AnimateZero animates the first frame into the following ones: "
            "set frames (the latent batch size) to 2 or more")
    if window_length > frames:
        raise Pix2GifInputError(
            f"window_length {window_length} is longer than the video ({frames} frames); use at most {frames}, or 0 "
            "for the video length")


def _refuse_context_windows(window) -> None:
    """AnimateZero animates the clip's frame 1 into every other frame: a context window without it cannot."""
    if window is not None:
        frames = window.index_list
        raise Pix2GifInputError(
            f"cannot run inside context windows (this window holds frames {frames[0]}–{frames[-1]} of "
            f"{window.total_frames}, without the whole clip's first frame): remove 'Context Windows (Manual)' and "
            "sample at most as many frames as the motion model has positions (16 as trained, 24 for v1, 32 for v2/v3)")


class PinnedCall(NamedTuple):
    """What one UNet call replays: frame 1's latent ``state`` and prediction ``denoised`` ``(1, C, h, w)`` and the
    image pass's keys/values (empty unless K/V sharing reads them), all on the call's device."""

    state: torch.Tensor
    denoised: torch.Tensor
    features: FirstFrameFeatures


def _kv_fit_on(device: torch.device):
    """Whether ``needed`` bytes of recorded keys/values may go to ``device`` for a sampling run
    (:data:`KV_SHARE_OF_FREE_MEMORY` of its free memory); logs when they stay where they are."""

    def fits(needed: int) -> bool:
        free = memory_budget.free_bytes(device)
        if needed <= KV_SHARE_OF_FREE_MEMORY * free:
            return True
        logger.info("[%s] the image pass's keys/values (%.2f GiB, %.2f GiB free on %s) stay where the trajectory "
                    "keeps them: each UNet call reads its step from the device once", AnimateZero.TITLE,
                    needed / memory_budget.GIB, free / memory_budget.GIB, device.type)
        return False

    return fits


def _pinned_call(replay: TrajectoryReplay, args: dict, frames: int, reads_features: bool) -> PinnedCall:
    """The recorded evaluation for this UNet call, selected on the device; read on the host (one read) only in the
    run's first evaluations, on hosts without sampling-run marks, or when the keys/values stay off the device."""
    x = args["input"]
    sample_sigmas = args["c"].get("transformer_options", {}).get("sample_sigmas")  # ComfyUI ≥ 0.3 only
    if sample_sigmas is not None:
        replay.check_schedule(sample_sigmas)
    check_latent_size(replay.trajectory, tuple(x.shape[1:]))
    index = replay.select(args["timestep"][0])
    position = None
    if replay.reads_each_call or (reads_features and not replay.stack_features(index.device,
                                                                               _kv_fit_on(index.device))):
        position = replay.read(index)
        if replay.departs(x[::frames], position):
            logger.warning(
                "[%s] frame 1 of the video latent left the recorded first-frame trajectory at σ=%.4g: the video "
                "sampler adds fresh noise at every step (ancestral/SDE samplers such as euler_ancestral or "
                "dpmpp_2m_sde) or its seed differs from the First Frame node's. The model still sees and returns the "
                "recorded first frame, so frame 1 ends on the image, within float rounding instead of bit-exactly.",
                AnimateZero.TITLE, replay.trajectory.evaluations[position].sigma)
    state, denoised = replay.latents_at(index)
    return PinnedCall(state, denoised, replay.features_at(index, position) if reads_features else {})


def _animatezero_wrapper(replay: TrajectoryReplay | None, window_length: int, reads_features: bool, previous):
    """UNet function wrapper: check the video, pin frame 1 of input and output, run the (motion) wrapper."""

    def wrapper(apply_model, args):
        x = args["input"]
        frames = x.shape[0] // max(len(args["cond_or_uncond"]), 1)
        with reported_as(AnimateZero.TITLE):
            _refuse_context_windows(args["c"].get("transformer_options", {}).get("context_window"))
            _check_frames(frames, window_length)
            pinned = None if replay is None else _pinned_call(replay, args, frames, reads_features)
        if pinned is not None:
            options = {**args["c"].get("transformer_options", {}), FEATURES_OPTION: pinned.features}
            args = {**args, "input": pin_first_frames(x, frames, pinned.state),
                    "c": {**args["c"], "transformer_options": options}}
        out = previous(apply_model, args) if previous is not None else apply_model(args["input"], args["timestep"],
                                                                                   **args["c"])
        return out if pinned is None else pin_first_frames(out, frames, pinned.denoised)

    return wrapper


def _pin_combined_prediction(replay: TrajectoryReplay):
    """Post-CFG hook: frame 1 of the guided prediction is the recorded x0 (whatever CFG function ran)."""

    def post_cfg(args):
        closed = replay.evaluation_done()
        denoised = args["denoised"]
        if closed is None:
            return denoised
        return pin_first_frames(denoised, denoised.shape[0], replay.latents_at(closed)[1])

    return post_cfg


def _replay_run_marks(replay: TrajectoryReplay):
    """Outer-sample wrapper (ComfyUI ≥ 0.3): marks each sampling run for the replay, which then reads the device
    in the run's first evaluations and once after it, not in every UNet call."""

    def wrapper(executor, *args, **kwargs):
        replay.start_run()
        try:
            out = executor(*args, **kwargs)
            with reported_as(AnimateZero.TITLE):
                replay.verify_run()
            return out
        finally:
            replay.end_run()

    return wrapper


class AnimateZero:
    TITLE = "AnimateZero"
    DESCRIPTION = (
        "Zero-shot image animation (AnimateZero) on a motion-patched MODEL. Pin first frame: frame 1 follows the "
        "trajectory of the image (from AnimateZero First Frame or Invert Image) at every step, so the first "
        "frame of the GIF is the image. K/V sharing: in spatial self-attention every frame takes keys and values "
        "from frame 1 (replace) or from itself and frame 1 (concat), for the chosen blocks and steps; kv_source "
        "'image pass' (default, as the paper) takes the keys and values the image's own pass computed, recorded "
        "with the trajectory, 'video pass' those of the video's frame 1. Window attention: in the chosen motion "
        "modules frame i attends causally to frame 1 and the frames up to i (window_length frames, padded with "
        "copies of frame 1 while fewer), with corrected position encodings. Sample with the GIF Sampler or "
        "KSampler using the trajectory's steps, scheduler and denoise. Pinning is exact with deterministic "
        "samplers (euler, ddim, dpmpp_2m, heun, …) and within float rounding with ancestral/SDE ones (a warning "
        "says so). Overrides other nodes' spatial self-attention replacements. All off = plain AnimateDiff.")

    @classmethod
    def INPUT_TYPES(cls):
        percent = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Output of Apply Motion Model"}),
                "pin_first_frame": ("BOOLEAN", {"default": True,
                                                "tooltip": "Frame 1 follows the trajectory: the GIF starts with the "
                                                           "image (needs `trajectory`)"}),
                "kv_sharing": (list(KV_MODES), {"default": "replace",
                                                "tooltip": "Spatial self-attention reads frame 1's keys/values: "
                                                           "replace = only frame 1's, concat = own and frame 1's, "
                                                           "off"}),
                "kv_blocks": (list(BLOCK_RANGES), {"default": "all",
                                                   "tooltip": "UNet blocks whose spatial self-attention shares "
                                                              "(down = encoder, mid, up = decoder)"}),
                "kv_start_percent": ("FLOAT", {"default": 0.0, **percent,
                                               "tooltip": "Share from this fraction of the denoising (0 = first "
                                                          "step)"}),
                "kv_end_percent": ("FLOAT", {"default": 1.0, **percent,
                                             "tooltip": "Share until this fraction of the denoising (1 = last "
                                                        "step)"}),
                "window_attention": ("BOOLEAN", {"default": True,
                                                 "tooltip": "Positional-corrected causal window attention in the "
                                                            "motion modules of window_blocks"}),
                "window_length": ("INT", {"default": 0, "min": 0, "max": 64,
                                          "tooltip": "Frames each frame attends to (≥ 2, at most the frames); "
                                                     "0 = the video length"}),
                "window_blocks": (list(BLOCK_RANGES), {"default": "down",
                                                       "tooltip": "Motion modules with window attention; the "
                                                                  "others keep global attention (paper: down)"}),
                "kv_source": (list(KV_SOURCES), {"default": "image pass",
                                                 "tooltip": "Whose frame-1 keys/values K/V sharing reads: the "
                                                            "image pass's, recorded with the trajectory (paper; "
                                                            "needs pin_first_frame), or the video's own frame 1"}),
            },
            "optional": {
                "trajectory": (TRAJECTORY_TYPE, {"tooltip": "From AnimateZero First Frame or Invert Image"}),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = category("AnimateZero")

    def patch(self, model, pin_first_frame, kv_sharing, kv_blocks, kv_start_percent, kv_end_percent,
              window_attention, window_length, window_blocks, kv_source="image pass", trajectory=None):
        with reported_as(self.TITLE):
            patched = set_temporal_variants(model, {})  # refuses a MODEL without motion model
            if window_attention:
                patched = set_temporal_variants(patched, _window_variants(patched, window_length, window_blocks))
            if kv_source not in KV_SOURCES:
                raise Pix2GifInputError(f"kv_source '{kv_source}' is unknown; choose one of {', '.join(KV_SOURCES)}")
            if kv_sharing != "off":
                if kv_source == "image pass" and not pin_first_frame:
                    raise Pix2GifInputError(
                        "kv_source 'image pass' reads the keys/values recorded with the trajectory at each step, "
                        "which needs pin_first_frame: turn pin_first_frame on (with a trajectory), or set kv_source "
                        "to 'video pass'")
                self._share_kv(patched, kv_sharing, kv_source, kv_blocks, kv_start_percent, kv_end_percent)
            replay = None
            if pin_first_frame:
                if trajectory is None:
                    raise Pix2GifInputError("pin_first_frame needs `trajectory`: connect AnimateZero First Frame or "
                                            "Invert Image, or turn pin_first_frame off")
                _check_noise_levels(trajectory, patched)
                replay = TrajectoryReplay(trajectory)
                patched.set_model_sampler_post_cfg_function(_pin_combined_prediction(replay))
                if hasattr(patched, "add_wrapper_with_key"):
                    import comfy.patcher_extension

                    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
                                                 REPLAY_RUN_WRAPPER_KEY, _replay_run_marks(replay))
            if pin_first_frame or window_attention:
                reads_features = kv_sharing != "off" and kv_source == "image pass"
                patched.set_model_unet_function_wrapper(_animatezero_wrapper(
                    replay, window_length if window_attention else 0, reads_features,
                    patched.model_options.get("model_function_wrapper")))
        return (patched,)

    @staticmethod
    def _share_kv(model, mode: str, source: str, blocks: str, start_percent: float, end_percent: float) -> None:
        if start_percent > end_percent:
            raise Pix2GifInputError(f"kv_start_percent {start_percent:g} is after kv_end_percent {end_percent:g}; "
                                    "start must not be later than end")
        sampling = model_sampling(model)
        whole = start_percent <= 0.0 and end_percent >= 1.0
        sigma_range = None if whole else (sampling.percent_to_sigma(end_percent),
                                          sampling.percent_to_sigma(start_percent))
        patch = _shared_kv_patch(mode, source, sigma_range)
        for kind, index, depth in _spatial_attention_positions(model, BLOCK_RANGES[blocks]):
            model.set_model_attn1_replace(patch, kind, index, depth)


NODE_CLASSES = {node_id("AnimateZeroFirstFrame"): AnimateZeroFirstFrame,
                node_id("AnimateZeroInvert"): AnimateZeroInvert, node_id("AnimateZero"): AnimateZero}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
