"""Nodes: Follow-Your-Click with public weights (methods.md §5) – clicks → Segment-Anything mask, and the patch
that confines a motion-patched MODEL's movement to that mask.

- *Load SAM Model* reads a Segment-Anything model from ``models/sams``: an original ``sam_vit_*`` checkpoint file or a
  Hugging Face folder of SAM or SAM 2;
- *Click Mask* turns clicks (JSON ``[[x, y, 1], [x, y, 0]]`` in image pixels, the click picker's widget) and an
  IMAGE into a MASK (best-scoring multimask output, optional dilation and feather); its ui ``images`` is the first
  image with its mask over it (a temp PNG), which the picker (js/click_picker.js) shows under the clicks;
- *Regional Motion* patches a motion-patched MODEL (after AnimateZero / Apply Motion Embeddings when used):
  a UNet function wrapper, outermost, gives the UNet frame 0's latent outside the region (just before the UNet,
  after other wrappers' pinning) and returns frame 0's prediction there; a post-CFG hook does the same to the
  guided prediction; on ComfyUI ≥ 0.3 an outer-sample wrapper starts every frame from frame 0's noise where the
  region is 0, so outside latents equal frame 0's bit for bit with deterministic samplers (on 2024-03, within
  float rounding). With a first-frame LATENT, frame 0 (and so the outside) is pinned to that image's latent.
  Soft confinement instead puts a motion-scale mask on the motion modules' temporal attention
  (``transformer_options``, read by the motion modules' frame wrapper before every UNet call) and pins nothing
  but frame 0 to a first-frame LATENT;
- *Regional Motion Report* measures the decoded clip inside and outside Regional Motion's mask and compares
  the flow inside with Regional Motion's target motion.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch

from ..pix2gif_core.animatezero.first_frame_pinning import pin_first_frames
from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.follow_your_click.click_points import parse_clicks
from ..pix2gif_core.follow_your_click.mask_overlay import mask_overlay
from ..pix2gif_core.follow_your_click.motion_scale_mask import check_background, motion_scale_masks
from ..pix2gif_core.follow_your_click.motion_target import check_motion_target, describe
from ..pix2gif_core.follow_your_click.regional_confinement import CONFINEMENTS, confine, latent_region, shared_noise
from ..pix2gif_core.follow_your_click.sam_segmentation import (
    BEST,
    SamSegmenter,
    check_coverage,
    load_sam,
    refine_mask,
    segment,
)
from ..pix2gif_core.video.animation_writer import write_workflow_image
from . import model_folders
from .animatediff_injection import motion_placement, set_temporal_key_scales
from .conventions import category, display_name, input_error, node_id, reported_as
from .metrics import measured_region_motion

SAMS = "sams"
SAM_TYPE = "PIX2GIF_SAM"
MASK_CHOICES = {"best score": BEST, "0 (smallest)": 0, "1": 1, "2 (largest)": 2}
NOISE_WRAPPER_KEY = "pix2gif_regional_motion"
#: Regional Motion's soft confinement: a motion-scale mask on the temporal attention instead of pinning
SOFT = "soft (motion scale)"
CONFINEMENT_CHOICES = (*CONFINEMENTS, SOFT)
REGIONAL_TYPE = "PIX2GIF_REGIONAL_MOTION"
#: ComfyUI temp-folder prefix of Click Mask's preview (the mask over the photo, shown by js/click_picker.js)
OVERLAY_PREFIX = "pix2gif_click_mask"


def _sam_choices() -> list[str]:
    """What ``models/sams`` holds, sorted: sub-folders with a ``config.json`` (Hugging Face layout) and weight files
    outside such folders (original ``sam_vit_*.pth`` checkpoints, their ``.safetensors`` conversions)."""
    found = set()
    for root in model_folders.folders(SAMS):
        if os.path.isdir(root):
            found.update(name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "config.json")))
    folders = set(found)
    found.update(name for name in model_folders.files(SAMS) if Path(name).parts[0] not in folders)
    return sorted(found)


def _sam_path(name: str) -> str | None:
    for root in model_folders.folders(SAMS):
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "config.json")):
            return path
    return model_folders.full_path(SAMS, name)


def _missing_sam_message() -> str:
    where = " or ".join(model_folders.folders(SAMS))
    return (f"no Segment-Anything model found. Put an original checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth "
            f"or sam_vit_h_4b8939.pth) or a Hugging Face SAM / SAM 2 download in its own folder (e.g. "
            f"facebook/sam-vit-base: config.json + model.safetensors) into {where} and press Refresh")


class LoadSamModel:
    TITLE = "Load SAM Model"
    DESCRIPTION = ("Loads a Segment-Anything model from models/sams, run through transformers: an original "
                   "checkpoint (sam_vit_b/l/h .pth or a .safetensors conversion; the ViT size is read from the file) "
                   "or a Hugging Face folder (config.json + model.safetensors) of SAM or SAM 2.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sam_name": (_sam_choices(), {"tooltip": "A sam_vit_*.pth file or a Hugging Face "
                                                                      "SAM / SAM 2 folder in models/sams"})}}

    RETURN_TYPES = (SAM_TYPE,)
    RETURN_NAMES = ("sam",)
    FUNCTION = "load"
    CATEGORY = category("Follow-Your-Click")

    @classmethod
    def VALIDATE_INPUTS(cls, sam_name):
        return model_folders.choice_error(SAMS, sam_name, "sam_name", cls.TITLE, _missing_sam_message,
                                          available=_sam_choices()) or True

    def load(self, sam_name):
        path = _sam_path(sam_name)
        if path is None:
            raise input_error(self.TITLE, _missing_sam_message())
        try:
            segmenter = load_sam(path)
        except Pix2GifInputError as error:
            raise input_error(self.TITLE, f"sam_name: {error}") from None
        return (segmenter,)


class ClickMask:
    TITLE = "Click Mask"
    DESCRIPTION = ("Segment Anything from clicks: positive clicks on the object, negative ones on what must stay "
                   "out, in image pixels (x right, y down, from the top-left corner). Multimask output; the "
                   "best-scoring mask is taken unless another is chosen; optionally grown (dilation) and softened "
                   "(feather) in pixels. One mask per image of the batch; a mask that selects nothing or the whole "
                   "image is refused (move or add clicks). Place the clicks on the image in the node (click: "
                   "object; shift- or right-click: background; drag: move; right-click a click: remove); after a run "
                   "the node shows the first image's mask over it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sam": (SAM_TYPE,),
            "image": ("IMAGE",),
            "points": ("STRING", {"default": "[[256, 256, 1]]", "multiline": False,
                                  "tooltip": "JSON clicks [[x, y, 1], [x, y, 0]]: 1 = object, 0 = background, "
                                             "image pixels"}),
            "mask_choice": (list(MASK_CHOICES), {"default": "best score",
                                                 "tooltip": "Which of SAM's three masks: the best predicted IoU, or "
                                                            "small → large"}),
            "dilation": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Grow the mask by this many pixels"}),
            "feather": ("INT", {"default": 0, "min": 0, "max": 64,
                                "tooltip": "Soften the edge over this many pixels (Gaussian)"}),
        }}

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    FUNCTION = "segment"
    CATEGORY = category("Follow-Your-Click")

    def _preview(self, image: torch.Tensor, mask: torch.Tensor) -> dict:
        """The first image with its mask over it, as a temp-folder PNG the click picker shows (ui ``images``)."""
        height, width = mask.shape
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            OVERLAY_PREFIX, folder_paths.get_temp_directory(), width, height)
        filename = f"{name}_{counter:05}_.png"
        with reported_as(self.TITLE):
            write_workflow_image(mask_overlay(image, mask), Path(folder) / filename, {})
        return {"filename": filename, "subfolder": subfolder, "type": "temp"}

    def segment(self, sam: SamSegmenter, image, points, mask_choice, dilation, feather):
        if mask_choice not in MASK_CHOICES:
            raise input_error(self.TITLE, f"mask_choice '{mask_choice}' is unknown; choose one of "
                                          f"{', '.join(MASK_CHOICES)}")
        with reported_as(self.TITLE):
            clicks = parse_clicks(points, image.shape[2], image.shape[1])
        progress = comfy.utils.ProgressBar(image.shape[0])
        masks = []
        for index, frame in enumerate(image[..., :3]):
            comfy.model_management.throw_exception_if_processing_interrupted()
            pixels = (frame.float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            with reported_as(self.TITLE):
                mask = segment(sam, np.ascontiguousarray(pixels), clicks, mask_index=MASK_CHOICES[mask_choice])
                check_coverage(mask, f" in image {index + 1} of {image.shape[0]}" if image.shape[0] > 1 else "")
            masks.append(refine_mask(mask, dilation, feather))
            progress.update(1)
        preview = self._preview(image[0], masks[0])
        return {"ui": {"images": [preview]},
                "result": (torch.stack(masks).to(comfy.model_management.intermediate_device()),)}


def _region_of(mask: torch.Tensor, confinement: str, strength: float):
    """``latent_hw → (h, w)`` region weights, computed once per latent size."""
    regions = {}

    def region(latent_hw: tuple[int, int]) -> torch.Tensor:
        if latent_hw not in regions:
            with reported_as(RegionalMotion.TITLE):
                regions[latent_hw] = latent_region(mask, latent_hw, confinement, strength)
        return regions[latent_hw]

    return region


def _key_scales_of(mask: torch.Tensor, background: float, strength: float):
    """``latent_hw → MotionScaleMask`` (soft confinement), errors reported as Regional Motion's."""
    masks = motion_scale_masks(mask, background, strength)

    def key_scales(latent_hw: tuple[int, int]):
        with reported_as(RegionalMotion.TITLE):
            return masks(latent_hw)

    return key_scales


def _frames_of(batch: torch.Tensor, args: dict) -> int:
    return batch.shape[0] // max(len(args.get("cond_or_uncond") or [0]), 1)


def _regional_wrapper(region, first_latent: torch.Tensor | None, previous):
    """UNet function wrapper: the UNet sees frame 0's latent outside the region (confined right before the UNet,
    inside every other wrapper); its prediction is frame 0's there (and frame 0 the first-frame latent if given).
    ``region`` None (soft confinement): only the first-frame pinning."""

    def wrapper(apply_model, args):
        frames = _frames_of(args["input"], args)
        weights = None if region is None else region(tuple(args["input"].shape[-2:]))

        def confined_model(x, t, **kwargs):
            return apply_model(x if weights is None else confine(x, frames, weights), t, **kwargs)

        out = previous(confined_model, args) if previous is not None else confined_model(args["input"],
                                                                                         args["timestep"], **args["c"])
        if first_latent is not None:
            out = pin_first_frames(out, frames, first_latent)
        return out if weights is None else confine(out, frames, weights)

    return wrapper


def _confined_prediction(region, first_latent: torch.Tensor | None):
    """Post-CFG hook: the guided prediction of every frame is frame 0's outside the region (``region`` None:
    only frame 0 pinned to the first-frame latent)."""

    def post_cfg(args):
        denoised = args["denoised"]
        frames = denoised.shape[0]
        if first_latent is not None:
            denoised = pin_first_frames(denoised, frames, first_latent)
        return denoised if region is None else confine(denoised, frames, region(tuple(denoised.shape[-2:])))

    return post_cfg


def _shared_noise_wrapper(region):
    """Outer-sample wrapper (ComfyUI ≥ 0.3): every frame starts from frame 0's noise where the region is 0."""

    def wrapper(executor, noise, *args, **kwargs):
        return executor(shared_noise(noise, region(tuple(noise.shape[-2:]))), *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class RegionalMotionSettings:
    """What Regional Motion hands to Regional Motion Report (type ``PIX2GIF_REGIONAL_MOTION``): the pixel mask
    ``(H, W)``, the strength the clip is made with and the target flow inside the mask (pixels, 0 = none)."""

    mask: torch.Tensor
    strength: float
    target_motion: float


class RegionalMotion:
    TITLE = "Regional Motion"
    DESCRIPTION = (
        "Only the masked region moves (Follow-Your-Click with public weights). Connect it LAST, after AnimateZero "
        "(its pinned first frame, i.e. the image's trajectory, is then what the outside follows) or Apply Motion "
        "Embeddings; or give first_latent (VAE Encode of the photo) to pin the first frame to the photo.\n"
        "hard: outside the mask every frame is the first frame – the UNet sees the first frame's latent there and "
        "its prediction is the first frame's; a latent cell moves when any of its pixels is in the mask; outside "
        "latents equal the first frame's exactly with deterministic samplers (ComfyUI ≥ 0.3; 2024-03: within float "
        "rounding). feathered: the same, the mask's soft edge blends. soft (motion scale): no pinning; the motion "
        "modules' temporal attention gets a motion-scale mask (AnimateDiff-Evolved's motion scale per position: "
        "keys × scale) – full strength inside, background_motion outside (0: every frame there attends to all "
        "frames equally, the motion modules' motion scale 0; 1: plain AnimateDiff), so the background may still "
        "move a little.\n"
        "strength scales the motion inside (hard/feathered: 0 = a still clip; soft: 0 = background_motion "
        "everywhere). Mask of ones and strength 1 = the MODEL unchanged.\n"
        "Motion strength you can check: the clip does not exist yet when this node runs, so the measured motion is "
        "reported after sampling by Regional Motion Report – connect this node's 'regional' output and the decoded "
        "frames to it; it measures the flow inside and outside the mask (as Measure Motion) and, with a "
        "target_motion here, how far off it is and which strength to try.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A motion-patched MODEL (Apply Motion Model, AnimateZero, …)"}),
                "mask": ("MASK", {"tooltip": "Where motion is allowed, at the video's pixel size (Click Mask)"}),
                "confinement": (list(CONFINEMENT_CHOICES), {
                    "default": "hard", "tooltip": "hard: exact still background; feathered: the mask's soft edge "
                                                  "blends; soft (motion scale): less motion outside, not pinned"}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "Motion inside the mask: 1 = the motion model's, 0 = none"}),
            },
            "optional": {
                "first_latent": ("LATENT", {"tooltip": "The photo (VAE Encode): the first frame (and with hard/"
                                                       "feathered the still outside) becomes it"}),
                "background_motion": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                                "tooltip": "soft only: motion scale outside the mask (0 = the "
                                                           "frames' mean, 1 = the motion model's own)"}),
                "target_motion": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                            "tooltip": "Wanted mean flow inside the mask in pixels (every frame "
                                                       "against frame 0); 0 = none. Checked after sampling by "
                                                       "Regional Motion Report"}),
            },
        }

    RETURN_TYPES = ("MODEL", "STRING", REGIONAL_TYPE)
    RETURN_NAMES = ("model", "report", "regional")
    OUTPUT_TOOLTIPS = ("The patched MODEL", "What the patch does",
                       "Mask and settings, for Regional Motion Report (with the decoded frames)")
    FUNCTION = "patch"
    CATEGORY = category("Follow-Your-Click")

    def patch(self, model, mask, confinement, strength, first_latent=None, background_motion=0.0,
              target_motion=0.0):
        with reported_as(self.TITLE):
            motion_placement(model)  # refuses a MODEL without motion model
            check_background(background_motion)
        if not 0.0 <= strength <= 1.0:
            raise input_error(self.TITLE, f"strength {strength:g} is outside 0…1; 1 = full motion, 0 = none")
        if target_motion < 0:
            raise input_error(self.TITLE, f"target_motion {target_motion:g} is negative; give pixels ≥ 0 (0 = none)")
        if mask.dim() == 3 and mask.shape[0] != 1:
            raise input_error(self.TITLE, f"mask holds {mask.shape[0]} masks; connect one (e.g. the first of Click "
                                          "Mask's batch)")
        pixels = mask.reshape(mask.shape[-2:]).float().cpu()
        coverage = float((pixels > 0.5).float().mean())
        if confinement not in CONFINEMENT_CHOICES:
            raise input_error(self.TITLE, f"confinement '{confinement}' is unknown; choose one of "
                                          f"{', '.join(CONFINEMENT_CHOICES)}")
        soft = confinement == SOFT
        latent = None
        if first_latent is not None:
            samples = first_latent["samples"]
            if samples.shape[0] != 1:
                raise input_error(self.TITLE, f"first_latent holds {samples.shape[0]} latents; connect the VAE "
                                              "Encode of one image")
            with reported_as(self.TITLE):
                latent_region(pixels, tuple(samples.shape[-2:]), "feathered", strength)  # size check up front
            latent = model.model.process_latent_in(samples.float())
        if soft:
            patched = set_temporal_key_scales(model, _key_scales_of(pixels, background_motion, strength))
            if latent is not None:
                patched.set_model_unet_function_wrapper(
                    _regional_wrapper(None, latent, patched.model_options.get("model_function_wrapper")))
                patched.set_model_sampler_post_cfg_function(_confined_prediction(None, latent))
            how = f"soft: motion scale 1 inside, {background_motion:.2f} outside"
        else:
            region = _region_of(pixels, confinement, strength)
            patched = model.clone()
            patched.set_model_unet_function_wrapper(
                _regional_wrapper(region, latent, patched.model_options.get("model_function_wrapper")))
            patched.set_model_sampler_post_cfg_function(_confined_prediction(region, latent))
            if hasattr(patched, "add_wrapper_with_key"):
                import comfy.patcher_extension

                patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, NOISE_WRAPPER_KEY,
                                             _shared_noise_wrapper(region))
            how = confinement
        target = f"target {target_motion:.2f} px inside" if target_motion > 0 else "no target"
        report = (f"motion confined to {coverage:.1%} of the image ({how}, strength {strength:.2f}; {target}); "
                  "connect 'regional' and the decoded frames to Regional Motion Report for the measured motion")
        settings = RegionalMotionSettings(pixels, float(strength), float(target_motion))
        return {"ui": {"text": [report]}, "result": (patched, report, settings)}


class RegionalMotionReport:
    TITLE = "Regional Motion Report"
    DESCRIPTION = (
        "The motion a Regional Motion clip really has: the mean optical-flow magnitude inside and outside its mask "
        "(Follow-Your-Click's motion strength: corner and grid points tracked with Lucas–Kanade, every frame "
        "against frame 0, pixels; the same numbers as Measure Motion with that mask). Connect Regional Motion's "
        "'regional' output and the frames decoded from the sampled clip (same size as the mask). With a "
        "target_motion on Regional Motion it says how far off the clip is and suggests a strength: the one that "
        "would reach the target if the flow grew in proportion to the strength (an estimate: run again and check).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "The decoded frames of the clip (VAE Decode)"}),
                             "regional": (REGIONAL_TYPE, {"tooltip": "Regional Motion's 'regional' output"})}}

    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("inside", "outside", "suggested_strength", "report")
    OUTPUT_TOOLTIPS = ("Mean flow magnitude inside the mask, pixels", "Mean flow magnitude outside it, pixels",
                       "Strength to try for the target (the strength used when no target is set)",
                       "Measured vs target, as shown in the node")
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = category("Follow-Your-Click")

    def report(self, images, regional: RegionalMotionSettings):
        if images.shape[0] < 2:
            raise input_error(self.TITLE, "images holds 1 frame; connect the decoded clip (all its frames)")
        motion = measured_region_motion(self.TITLE, images[..., :3], regional.mask)
        check = check_motion_target(motion, regional.target_motion, regional.strength)
        text = describe(check, motion)
        return {"ui": {"text": [text]}, "result": (motion.inside, motion.outside, check.suggested, text)}


NODE_CLASSES = {node_id("LoadSamModel"): LoadSamModel, node_id("ClickMask"): ClickMask,
                node_id("RegionalMotion"): RegionalMotion, node_id("RegionalMotionReport"): RegionalMotionReport}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}

model_folders.register(SAMS)
