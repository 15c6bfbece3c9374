"""Node: measure the motion magnitude of a frame sequence the way Pix2Gif's paper does (corners + Lucas–Kanade)."""
from __future__ import annotations

import torch

from ..pix2gif_core.follow_your_click.region_motion import RegionMotion, region_motion
from ..pix2gif_core.metrics.motion_magnitude import measure_motion
from . import memory_budget
from .conventions import category, display_name, input_error, node_id, reported_as

TRACKING_BYTES_PER_PIXEL = 40
"""Working memory per pixel of a frame while it is tracked: gray, pyramid, float32 RGB and the reference copy."""


def tracking_chunk(node_title: str, frames: torch.Tensor) -> int:
    """Frames per tracking chunk of ``frames`` ``(F, H, W, 3)``, once one frame's tracking is known to fit."""
    count, height, width = frames.shape[:3]
    per_frame_bytes = TRACKING_BYTES_PER_PIXEL * height * width
    memory_budget.require(node_title, per_frame_bytes + memory_budget.CHUNK_BYTES, frames.device,
                          f"tracking one frame of {width}×{height}", "measure a smaller copy (e.g. ImageScale)")
    return memory_budget.frames_per_chunk(per_frame_bytes, count)


def measured_region_motion(node_title: str, frames: torch.Tensor, mask: torch.Tensor) -> RegionMotion:
    """Flow magnitude inside/outside one MASK ``(1, H, W)`` or ``(H, W)`` for ``frames`` ``(F, H, W, 3)``."""
    if mask.dim() == 3 and mask.shape[0] != 1:
        raise input_error(node_title, f"mask holds {mask.shape[0]} masks; connect one")
    with reported_as(node_title):
        return region_motion(frames, mask.reshape(mask.shape[-2:]).to(frames.device),
                             chunk=tracking_chunk(node_title, frames))


class MeasureMotion:
    TITLE = "Measure Motion"
    DESCRIPTION = ("Pix2Gif's motion metric: Shi–Tomasi corners on the first (or reference) frame tracked with "
                   "pyramidal Lucas–Kanade into every frame; per frame the mean displacement of points moving more "
                   "than 1 px, and their mean over the clip (pixels at the frames' resolution). Use it to pick "
                   "Pix2Gif magnitudes from a reference clip (measure at 256×256) or to check a generation. With a "
                   "mask: the mean flow magnitude of corner and grid points inside and outside it (Follow-Your-"
                   "Click's motion strength; a still background gives 0).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)},
                "optional": {"reference": ("IMAGE", {"tooltip": "Measure every frame against this image instead "
                                                                "of the first frame (Pix2Gif: the source image)"}),
                             "mask": ("MASK", {"tooltip": "Also report the mean flow magnitude inside and outside "
                                                          "this region (e.g. Click Mask's), frames' size"})}}

    RETURN_TYPES = ("FLOAT", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("magnitude", "per_frame", "inside", "outside")
    OUTPUT_TOOLTIPS = ("Mean over the measured frames, pixels", "Comma-separated magnitude of each frame, pixels",
                       "With a mask: mean flow magnitude of points inside it, pixels (else 0)",
                       "With a mask: mean flow magnitude of points outside it, pixels (else 0)")
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = category("Motion")

    def measure(self, images, reference=None, mask=None):
        frames = images[..., :3]
        if reference is not None:
            if reference.shape[1:3] != images.shape[1:3]:
                raise input_error(self.TITLE, f"reference: {reference.shape[2]}×{reference.shape[1]} but the images "
                                              f"are {images.shape[2]}×{images.shape[1]}; give the same size")
            frames = torch.cat([reference[:1, ..., :3], frames])
        chunk = tracking_chunk(self.TITLE, frames)
        with reported_as(self.TITLE):
            result = measure_motion(frames, chunk=chunk)
        per_frame = result.per_frame[1:] if reference is not None else result.per_frame
        listed = ", ".join(f"{value:.2f}" for value in per_frame.tolist())
        summary = f"motion {result.clip:.2f} px ({result.corners} corners); per frame: {listed}"
        inside = outside = 0.0
        if mask is not None:
            regional = measured_region_motion(self.TITLE, frames, mask)
            inside, outside = regional.inside, regional.outside
            summary += (f"; flow inside the mask {inside:.2f} px ({regional.points_inside} points), outside "
                        f"{outside:.2f} px ({regional.points_outside} points)")
        return {"ui": {"text": [summary]}, "result": (result.clip, listed, inside, outside)}


NODE_CLASSES = {node_id("MeasureMotion"): MeasureMotion}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
