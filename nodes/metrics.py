"""Nodes: the metrics the papers report, on any clip – motion magnitude the way Pix2Gif's paper measures it
(corners + Lucas–Kanade), and Follow-Your-Click's I-MSE, temporal consistency and text alignment (CLIP)."""
from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch

from ..pix2gif_core.follow_your_click.region_motion import RegionMotion, region_motion
from ..pix2gif_core.metrics.clip_similarity import consecutive_similarities, embed_frames, text_similarities
from ..pix2gif_core.metrics.first_frame_error import first_frame_mse
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


CLIP_FAMILIES = {512: "CLIP ViT-B", 768: "CLIP ViT-L/14 (CLIP-L)", 1024: "OpenCLIP ViT-H/14 (SD2.x)",
                 1280: "OpenCLIP ViT-bigG/14 (CLIP-G)"}
"""CLIP models by the width of their shared text–image embedding space (projection_dim)."""

CLIP_INPUT_SIZE = 224
"""Side of the square every frame is resized and centre-cropped to before a CLIP vision model sees it."""


def clip_family(width: int) -> str:
    return CLIP_FAMILIES.get(width, f"a {width}-wide CLIP")


def _vision_bytes_per_frame(clip_vision, height: int, width: int) -> float:
    """Working memory to encode one frame: the frame and its resized copies, plus the ViT's activations from
    the model's token count × width (position embedding table; ViT-H/14 shape when it cannot be read)."""
    embeddings = getattr(getattr(clip_vision.model, "vision_model", None), "embeddings", None)
    table = getattr(getattr(embeddings, "position_embedding", None), "weight", None)
    tokens, hidden = tuple(table.shape) if table is not None and table.dim() == 2 else (257, 1280)
    return 4.0 * (12 * height * width + 12 * CLIP_INPUT_SIZE ** 2 + 16 * tokens * hidden + 16 * tokens * tokens)


def clip_image_embeddings(node_title: str, clip_vision, images: torch.Tensor) -> torch.Tensor:
    """(F, D) projected CLIP image embeddings of ``images`` (ComfyUI's ``encode_image``: resize and centre crop
    to the model's input), in memory-bounded chunks with progress and Cancel between chunks."""
    count, height, width = images.shape[:3]
    chunk = memory_budget.frames_per_chunk(_vision_bytes_per_frame(clip_vision, height, width), count)
    progress = comfy.utils.ProgressBar(count)

    def after_chunk(done: int) -> None:
        progress.update_absolute(done, count)
        comfy.model_management.throw_exception_if_processing_interrupted()

    def encode(frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            embeds = clip_vision.encode_image(frames)["image_embeds"]
        if embeds.dim() != 2:
            raise input_error(node_title, f"clip_vision gives image embeddings of shape {tuple(embeds.shape)}, "
                                          "not one vector per frame; load a CLIP vision model (CLIPVisionLoader)")
        return embeds

    comfy.model_management.throw_exception_if_processing_interrupted()
    return embed_frames(encode, images, chunk, after_chunk)


def _is_placeholder(projection: torch.Tensor) -> bool:
    """Whether a text-projection weight is what ComfyUI leaves when the file had none: the identity (2024-03)
    or zeros / non-finite values (later versions leave it unset)."""
    weight = projection.detach().float()
    eye = torch.eye(weight.shape[0], weight.shape[1], device=weight.device)
    return not bool(weight.isfinite().all()) or bool((weight == 0).all()) or bool(torch.equal(weight, eye))


def _text_towers(clip, width: int) -> list:
    """ComfyUI's CLIP text towers (``SDClipModel``: CLIP-L, CLIP-G, OpenCLIP-H) inside ``clip`` whose text
    projection is ``width`` wide – the ones that can have given a pooled output of that width."""
    def projection(module):
        return getattr(getattr(getattr(module, "transformer", None), "text_projection", None), "weight", None)

    return [module for module in clip.cond_stage_model.modules() if hasattr(module, "return_projected_pooled")
            and projection(module) is not None and projection(module).shape[0] == width]


def clip_text_embedding(node_title: str, clip, text: str, width: int) -> torch.Tensor:
    """(D,) projected CLIP text embedding of ``text`` from ComfyUI's CLIP (its pooled output: CLIP-L's for an SD1.5
    CLIP, CLIP-G's for SDXL, OpenCLIP-H's for SD2.x), checked against the image embedding ``width``; refused where
    ComfyUI's CLIP cannot give a true one."""
    with torch.no_grad():
        _, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    if pooled is None:
        raise input_error(node_title, "clip gives no pooled text embedding (not a CLIP text encoder); load a "
                                      "CLIP-L, CLIP-G or SD2 text encoder (Load Checkpoint / Load CLIP)")
    pooled = pooled.float().reshape(-1)
    if pooled.shape[0] != width:
        joined = (" – it is CLIP-L and CLIP-G joined (SD3); load one of them alone with Load CLIP"
                  if pooled.shape[0] == 2048 else "")
        raise input_error(node_title, f"clip's text embedding is {pooled.shape[0]} wide "
                                      f"({clip_family(pooled.shape[0])}{joined}) but clip_vision's image embedding "
                                      f"is {width} wide ({clip_family(width)}); give a text and a vision model of "
                                      "the same CLIP family")
    towers = _text_towers(clip, width)
    if towers and not any(tower.return_projected_pooled for tower in towers):
        raise input_error(node_title, "clip gives CLIP-L's unprojected pooled output (Flux / SD3 / HunyuanVideo "
                                      "text encoders), not its embedding in CLIP's text–image space; load the "
                                      "CLIP-L file alone with Load CLIP (type stable_diffusion)")
    if towers and all(_is_placeholder(tower.transformer.text_projection.weight) for tower in towers):
        raise input_error(node_title, "clip has no text projection (SD1.5 checkpoints store none), so its text "
                                      "embedding is not in CLIP's text–image space; load a CLIP-L text encoder "
                                      "file that carries one (e.g. clip_l.safetensors) with Load CLIP, or an "
                                      "SDXL / SD2 checkpoint's CLIP")
    return pooled


def _listed(values: torch.Tensor) -> str:
    return ", ".join(f"{value:.4f}" for value in values.tolist())


class PaperMetric:
    """What the paper-metric nodes share: a FLOAT and a STRING out, the text also shown in the node."""

    RETURN_TYPES = ("FLOAT", "STRING")
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = category("Metrics")

    @staticmethod
    def shown(value: float, text: str, report: str) -> dict:
        return {"ui": {"text": [report]}, "result": (value, text)}

    @classmethod
    def mean_of(cls, values: torch.Tensor, what: str, detail: str, per: str) -> dict:
        """FLOAT mean of ``values`` and STRING of every value; the node shows "<what> 0.9876 (<detail>); per
        <per>: …"."""
        mean, listed = float(values.mean()), _listed(values)
        return cls.shown(mean, listed, f"{what} {mean:.4f} ({detail}); per {per}: {listed}")


class FirstFrameError(PaperMetric):
    TITLE = "I-MSE (First Frame vs Image)"
    DESCRIPTION = ("Follow-Your-Click's I-MSE: the mean squared error between the clip's first frame and the input "
                   "image, over every pixel and RGB channel with pixel values in [0, 1] (0 = identical; ×65025 "
                   "for the 8-bit scale). Same size required.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "The clip (frames); its first frame is measured"}),
                             "image": ("IMAGE", {"tooltip": "The input image the clip was made from, the frames' "
                                                            "size"})}}

    RETURN_NAMES = ("i_mse", "report")
    OUTPUT_TOOLTIPS = ("Mean squared error, pixel values in [0, 1]", "The value as text (also shown in the node)")

    def measure(self, images, image):
        if image.shape[0] != 1:
            raise input_error(self.TITLE, f"image holds {image.shape[0]} images; connect the one input image")
        with reported_as(self.TITLE):
            error = first_frame_mse(images, image[0])
        report = f"I-MSE {error:.6f} (pixel values in [0, 1]; {error * 255 ** 2:.2f} on the 0–255 scale)"
        return self.shown(error, report, report)


class TemporalConsistency(PaperMetric):
    TITLE = "Temporal Consistency (CLIP)"
    DESCRIPTION = ("Follow-Your-Click's Tem-Consis: the mean cosine similarity of the CLIP image embeddings "
                   "(projected, ComfyUI's CLIP vision encode: resized and centre-cropped to the model's input) of "
                   "consecutive frames; 1 = every frame looks the same to CLIP. Frames are encoded in chunks.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision": ("CLIP_VISION", {"tooltip": "Any CLIP vision model (Load CLIP Vision), "
                                                                        "e.g. ViT-L/14 or ViT-H/14"}),
                             "images": ("IMAGE", {"tooltip": "The clip, at least 2 frames"})}}

    RETURN_NAMES = ("consistency", "per_pair")
    OUTPUT_TOOLTIPS = ("Mean cosine similarity of consecutive frames' CLIP image embeddings (−1…1)",
                       "Comma-separated similarity of frames 1–2, 2–3, …")

    def measure(self, clip_vision, images):
        with reported_as(self.TITLE):
            pairs = consecutive_similarities(clip_image_embeddings(self.TITLE, clip_vision, images))
        return self.mean_of(pairs, "temporal consistency", f"{images.shape[0]} frames", "pair")


class TextAlignment(PaperMetric):
    TITLE = "Text Alignment (CLIP)"
    DESCRIPTION = ("Follow-Your-Click's Text-align: the mean over frames of the cosine of the prompt's CLIP text "
                   "embedding and each frame's CLIP image embedding, both projected into CLIP's shared space. "
                   "Needs both towers of one CLIP: the text encoder as CLIP (its projected pooled output) and the "
                   "vision model of the same family as CLIP_VISION – CLIP-L text + ViT-L/14 vision, CLIP-G text "
                   "(SDXL) + ViT-bigG/14 vision, SD2's OpenCLIP-H text + ViT-H/14 vision.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "CLIP text encoder with its text projection: a CLIP-L file (Load CLIP), an "
                                         "SDXL or SD2 checkpoint's CLIP. SD1.5 checkpoints store no text "
                                         "projection, so their CLIP cannot give a true CLIP text embedding (refused "
                                         "where ComfyUI's placeholder shows), nor can Flux / SD3 dual encoders "
                                         "(unprojected CLIP-L output, refused); ComfyUI cannot tell whether two "
                                         "models of the same width were trained together – pair the files yourself"}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "The vision model of the same CLIP (Load CLIP Vision)"}),
            "images": ("IMAGE", {"tooltip": "The clip (frames)"}),
            "text": ("STRING", {"multiline": True, "default": "",
                                "tooltip": "The prompt to compare with, e.g. the motion prompt"})}}

    RETURN_NAMES = ("alignment", "per_frame")
    OUTPUT_TOOLTIPS = ("Mean over frames of the text–image cosine (−1…1; CLIPScore = 100 × max(cosine, 0))",
                       "Comma-separated cosine of each frame")

    def measure(self, clip, clip_vision, images, text):
        if not text.strip():
            raise input_error(self.TITLE, "text is empty; type the prompt to compare the frames with")
        with reported_as(self.TITLE):
            image_embeddings = clip_image_embeddings(self.TITLE, clip_vision, images)
            text_embedding = clip_text_embedding(self.TITLE, clip, text, image_embeddings.shape[1])
            cosines = text_similarities(text_embedding, image_embeddings)
        return self.mean_of(cosines, "text alignment",
                            f"{clip_family(image_embeddings.shape[1])}, {images.shape[0]} frames", "frame")


NODE_CLASSES = {node_id("MeasureMotion"): MeasureMotion, node_id("FirstFrameError"): FirstFrameError,
                node_id("TemporalConsistency"): TemporalConsistency, node_id("TextAlignment"): TextAlignment}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
