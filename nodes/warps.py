"""Nodes: weight-free motion (translate / zoom / rotate / sway) of an image or a latent by a parametric warp.

*Motion Preview* animates an IMAGE directly – a GIF in seconds on a CPU, no model. *Warp Latent* applies the same
motion to a LATENT so that any SD1.5 MODEL can refine the frames at a chosen denoise (the GIF Sampler takes the
F-frame latent as its start latent): training-free, Pix2Gif-style generation. Units: ``magnitude`` is in pixels of
the image at the last frame (see ``pix2gif_core.warps.motion_field``); Warp Latent divides it by 8 for the latent.
"""
from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch
import torch.nn.functional as F

from ..pix2gif_core.warps.motion_field import EDGE_MODES, MOTION_KINDS, motion_field, warp_in_chunks
from . import memory_budget
from .conventions import category, display_name, input_error, node_id, reported_as

LATENT_SCALE = 8
MAX_FRAMES = 1024
FIELD_BYTES_PER_PIXEL = 32
"""Working memory per pixel of a frame while it is warped: field, grid and the crop zoom's intermediates."""


def motion_inputs() -> dict:
    """The motion widgets both nodes share, in widget order."""
    return {
        "motion": (list(MOTION_KINDS), {"default": "zoom",
                                        "tooltip": "translate: slide; zoom: in (+) or out (−); rotate: clockwise "
                                                   "(+); sway: back and forth, loops"}),
        "magnitude": ("FLOAT", {"default": 24.0, "min": -4096.0, "max": 4096.0, "step": 0.5,
                                "tooltip": "Pixels the content moves by the last frame (zoom / rotate: at half the "
                                           "shorter side from the centre; sway: the swing amplitude)"}),
        "direction": ("FLOAT", {"default": 0.0, "min": -360.0, "max": 360.0, "step": 1.0,
                                "tooltip": "Degrees, 0 = right, 90 = up (translate and sway)"}),
        "frames": ("INT", {"default": 16, "min": 2, "max": MAX_FRAMES, "tooltip": "Frame 0 is the input itself"}),
        "edge": (list(EDGE_MODES), {"default": "reflect",
                                    "tooltip": "reflect: mirror what comes in from outside; crop: zoom in just "
                                               "enough that nothing comes from outside. Neither leaves black borders"}),
        "center_x": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Zoom / rotate centre, fraction of the width"}),
        "center_y": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Zoom / rotate centre, fraction of the height"}),
        "sway_cycles": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 64.0, "step": 0.25,
                                  "tooltip": "Sway only: back-and-forth cycles over the clip (whole = seamless loop)"}),
    }


class _ParametricMotion:
    """What both nodes share: the source input plus the motion widgets and an optional MASK, and the warp."""

    TITLE: str
    SOURCE: tuple[str, str]
    """(input name, ComfyUI type) of the one thing that moves."""
    MASK_TOOLTIP: str
    CATEGORY = category("Motion")

    @classmethod
    def INPUT_TYPES(cls):
        name, kind = cls.SOURCE
        return {"required": {name: (kind,), **motion_inputs()},
                "optional": {"mask": ("MASK", {"tooltip": cls.MASK_TOOLTIP})}}

    def _one(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] != 1:
            raise input_error(self.TITLE, f"{self.SOURCE[0]}: got a batch of {batch.shape[0]}; the motion animates "
                                          "one (pick one, e.g. with 'ImageFromBatch' / 'Latent From Batch')")
        return batch

    def _warp(self, source: torch.Tensor, mask: torch.Tensor | None, motion, magnitude, direction, frames, edge,
              center_x, center_y, sway_cycles, channels_last: bool) -> torch.Tensor:
        """``source`` (1, C, H, W) → (frames, H, W, C) if ``channels_last`` else (frames, C, H, W), warped in
        chunks of frames (progress and cancel per chunk); ``mask`` (1|F, H, W) or None; magnitude in its pixels."""
        channels, height, width = source.shape[1:]
        frame_bytes = height * width * channels * source.element_size()
        chunk = memory_budget.frames_per_chunk(height * width * (FIELD_BYTES_PER_PIXEL + 3 * 4 * channels), frames)
        memory_budget.require(self.TITLE, frames * frame_bytes + memory_budget.CHUNK_BYTES, source.device,
                              f"{frames} frames of {width}×{height}", "lower `frames` or the size of the input")
        out = source.new_empty((frames, height, width, channels) if channels_last else (frames, channels, height,
                                                                                         width))
        progress = comfy.utils.ProgressBar(frames)

        def field_of(first: int, stop: int):
            return motion_field(motion, magnitude, frames, height, width, direction_deg=direction,
                                center=(center_x, center_y), sway_cycles=sway_cycles, mask=mask,
                                frame_range=(first, stop))

        with reported_as(self.TITLE):
            for first, stop, warped in warp_in_chunks(source, field_of, frames, edge, chunk):
                comfy.model_management.throw_exception_if_processing_interrupted()
                out[first:stop] = warped.movedim(1, -1) if channels_last else warped
                progress.update(stop - first)
        return out


class MotionPreview(_ParametricMotion):
    TITLE = "Motion Preview"
    DESCRIPTION = ("Animates one image by a parametric motion (translate, zoom, rotate, sway) without any model: "
                   "a preview of the motion, ready for Save Animation. An optional mask limits the motion (0 = "
                   "still, exactly).")
    SOURCE = ("image", "IMAGE")
    MASK_TOOLTIP = "Same size as the image; 1 moves, 0 stays"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "preview"

    def preview(self, image, motion, magnitude, direction, frames, edge, center_x, center_y, sway_cycles,
                mask=None):
        source = self._one(image).movedim(-1, 1)
        height, width = source.shape[-2:]
        if mask is not None and tuple(mask.shape[-2:]) != (height, width):
            raise input_error(self.TITLE, f"mask: {mask.shape[-1]}×{mask.shape[-2]} but the image is {width}×{height}"
                                          "; give a mask of the image's size (LoadImage gives a 64×64 empty mask "
                                          "for images without alpha)")
        warped = self._warp(source, mask, motion, magnitude, direction, frames, edge, center_x, center_y,
                            sway_cycles, channels_last=True)
        return (warped.clamp_(0.0, 1.0),)


class WarpLatent(_ParametricMotion):
    TITLE = "Warp Latent"
    DESCRIPTION = ("Applies a parametric motion to one latent → a latent clip of `frames` frames (magnitude in "
                   "image pixels). Refine it with any SD1.5 model at denoise ≈ 0.4–0.7 (GIF Sampler start_latent) "
                   "for training-free Pix2Gif-style animation.")
    SOURCE = ("samples", "LATENT")
    MASK_TOOLTIP = "Image-sized (8× the latent) or latent-sized; 1 moves, 0 stays"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "warp"

    def _latent_mask(self, mask: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
        """A MASK at the image size (area-averaged down by 8) or at the latent size → (1|F, height, width)."""
        if mask is None:
            return None
        mask = mask[None] if mask.dim() == 2 else mask
        size = tuple(mask.shape[-2:])
        if size == (height * LATENT_SCALE, width * LATENT_SCALE):
            return F.interpolate(mask[:, None].float(), size=(height, width), mode="area")[:, 0]
        if size == (height, width):
            return mask
        raise input_error(self.TITLE, f"mask: {size[1]}×{size[0]} fits neither the image ({width * LATENT_SCALE}×"
                                      f"{height * LATENT_SCALE}) nor the latent ({width}×{height}); resize it to "
                                      "the image size")

    def warp(self, samples, motion, magnitude, direction, frames, edge, center_x, center_y, sway_cycles, mask=None):
        latent = self._one(samples["samples"])
        warped = self._warp(latent, self._latent_mask(mask, *latent.shape[-2:]), motion, magnitude / LATENT_SCALE,
                            direction, frames, edge, center_x, center_y, sway_cycles, channels_last=False)
        return ({"samples": warped},)


NODE_CLASSES = {node_id("MotionPreview"): MotionPreview, node_id("WarpLatent"): WarpLatent}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
