"""Segment-Anything masks from clicks, run through ``transformers`` (``SamModel`` / ``Sam2Model``).

:func:`load_sam` reads
- a folder in the Hugging Face layout (``config.json`` + ``model.safetensors``): ``model_type`` "sam" (e.g.
  ``facebook/sam-vit-base``) runs through ``SamModel`` and its processor (a ``preprocessor_config.json`` there is
  used, else the processor is built for the model's input size: longest edge resized to ``image_size``, padded
  square); "sam2" / "sam2_video" (e.g. ``facebook/sam2.1-hiera-large``) through ``Sam2Model`` with SAM 2's own
  transforms (:mod:`.sam2_transforms`);
- an original Segment-Anything checkpoint file (``sam_vit_*.pth`` or a ``.safetensors`` conversion), converted in
  memory (:mod:`.sam_checkpoint`).
Multimask output gives three candidate masks per prompt; the best-scoring (predicted IoU) is taken unless an index
is chosen. Masks are the logits upsampled to the image by the model family's own post-processing, thresholded at 0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Pix2GifInputError
from .click_points import Clicks
from .sam2_transforms import Sam2Prompts
from .sam_checkpoint import load_original_sam

SAM_MODEL_TYPE = "sam"
SAM2_MODEL_TYPES = ("sam2", "sam2_video")
#: ``model_type`` of other segmentation families a user may put in models/sams, with what to do instead
OTHER_FAMILIES = {"sam_hq": "SAM-HQ", "sam3": "SAM 3", "sam3_tracker": "SAM 3", "edgetam": "EdgeTAM"}
MASK_THRESHOLD = 0.0
BEST = -1


class Prompts(Protocol):
    """A model family's pre- and post-processing. ``model_inputs``: the model's tensors for an image ``(H, W, 3)``
    uint8 and its clicks (``pixel_values`` ``(1, 3, S, S)``, ``input_points`` ``(1, 1, N, 2)`` in input pixels,
    ``input_labels`` ``(1, 1, N)``) and a context for ``mask_logits``, which turns ``pred_masks`` ``(1, 1, M, h, w)``
    into ``(M, H, W)`` logits at the image's size."""

    def model_inputs(self, image: np.ndarray, clicks: Clicks) -> tuple[dict[str, torch.Tensor], object]: ...

    def mask_logits(self, pred_masks: torch.Tensor, context: object) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamPrompts:
    """SAM's pre- and post-processing through transformers' ``SamProcessor``."""

    processor: object

    def model_inputs(self, image: np.ndarray, clicks: Clicks) -> tuple[dict[str, torch.Tensor], object]:
        inputs = self.processor(images=image, input_points=[[list(map(list, clicks.points))]],
                                input_labels=[[list(clicks.labels)]], return_tensors="pt")
        sizes = (inputs.pop("original_sizes"), inputs.pop("reshaped_input_sizes"))
        return dict(inputs), sizes

    def mask_logits(self, pred_masks: torch.Tensor, context: object) -> torch.Tensor:
        original_sizes, reshaped_sizes = context
        return self.processor.image_processor.post_process_masks(pred_masks.float(), original_sizes, reshaped_sizes,
                                                                 binarize=False)[0][0]


@dataclass(frozen=True)
class SamSegmenter:
    """A loaded SAM / SAM 2: ``model`` (eval mode), ``prompts`` (its pre/post-processing), ``name`` for messages."""

    model: torch.nn.Module
    prompts: Prompts
    name: str


def sam_prompts(folder: str | None, image_size: int) -> SamPrompts:
    """SAM's processor: the folder's ``preprocessor_config.json`` if there is one, else longest edge resized to
    ``image_size`` pixels and padded square."""
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    if folder is not None and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        return SamPrompts(SamProcessor(SamImageProcessorPil.from_pretrained(folder)))
    return SamPrompts(SamProcessor(SamImageProcessorPil(size={"longest_edge": image_size},
                                                        pad_size={"height": image_size, "width": image_size})))


def _from_pretrained(model_class, folder: str, name: str) -> torch.nn.Module:
    """``model_class`` from the folder's safetensors, eval mode; a folder whose weights lack tensors of its
    config's model (transformers would initialise them randomly) or hold them in other shapes is refused."""
    model, info = model_class.from_pretrained(folder, use_safetensors=True, output_loading_info=True)
    problems = [*info.get("missing_keys", []), *(str(key[0]) if isinstance(key, tuple) else str(key)
                                                 for key in info.get("mismatched_keys", []))]
    if problems:
        raise Pix2GifInputError(f"'{name}' does not hold the weights its config.json describes (missing or other "
                                f"shapes: {', '.join(sorted(problems)[:5])}); the download is incomplete or damaged: "
                                "download it again")
    return model.eval()


def _load_folder(folder: str, name: str) -> SamSegmenter:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise Pix2GifInputError(
            f"'{name}' is not a Segment-Anything folder (no config.json); put a Hugging Face SAM or SAM 2 download "
            "(e.g. facebook/sam-vit-base: config.json + model.safetensors) in its own folder under models/sams")
    with open(config_path, encoding="utf-8") as file:
        model_type = json.load(file).get("model_type")
    if model_type == SAM_MODEL_TYPE:
        from transformers import SamModel

        model = _from_pretrained(SamModel, folder, name)
        return SamSegmenter(model, sam_prompts(folder, int(model.config.vision_config.image_size)), name)
    if model_type in SAM2_MODEL_TYPES:
        try:
            from transformers import Sam2Model
        except ImportError:
            raise Pix2GifInputError(f"'{name}' is a SAM 2 model; the installed transformers has no Sam2Model: "
                                    "update it (pip install -U transformers) or use a SAM model") from None
        model = _from_pretrained(Sam2Model, folder, name)
        return SamSegmenter(model, Sam2Prompts(int(model.config.prompt_encoder_config.image_size)), name)
    family = OTHER_FAMILIES.get(model_type, f"model_type '{model_type}'")
    raise Pix2GifInputError(
        f"'{name}' is a {family} model, not Segment Anything (model_type 'sam', 'sam2' or 'sam2_video'); this node "
        "runs SAM ViT-B/L/H and SAM 2: use e.g. facebook/sam-vit-base or facebook/sam2.1-hiera-large in models/sams")


def load_sam(path: str) -> SamSegmenter:
    """The SAM / SAM 2 at ``path``: a Hugging Face folder or an original ``sam_vit_*`` checkpoint file; raises
    :class:`Pix2GifInputError` naming the folder or file for anything else (another family, no config)."""
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        return _load_folder(path, name)
    model = load_original_sam(path)
    return SamSegmenter(model, sam_prompts(None, int(model.config.vision_config.image_size)), name)


def segment(segmenter: SamSegmenter, image: np.ndarray, clicks: Clicks, *, mask_index: int = BEST) -> torch.Tensor:
    """Mask ``(H, W)`` float {0, 1} of the object the clicks select in ``image`` ``(H, W, 3)`` uint8.

    ``mask_index``: :data:`BEST` for the candidate with the highest predicted IoU, else 0–2 (SAM's small → large
    multimask outputs)."""
    model, prompts = segmenter.model, segmenter.prompts
    parameter = next(model.parameters())
    inputs, context = prompts.model_inputs(image, clicks)
    with torch.no_grad():
        outputs = model(**{key: value.to(parameter.device, parameter.dtype) if value.is_floating_point()
                           else value.to(parameter.device) for key, value in inputs.items()}, multimask_output=True)
    logits = prompts.mask_logits(outputs.pred_masks.float().cpu(), context)
    chosen = int(outputs.iou_scores[0, 0].argmax()) if mask_index == BEST else mask_index
    return (logits[chosen] > MASK_THRESHOLD).float()


def check_coverage(mask: torch.Tensor, where: str = "") -> None:
    """Refuse a mask ``(H, W)`` from :func:`segment` that selects no pixel or every pixel (``where``: e.g. " in
    image 3" for the message): neither confines motion to an object."""
    selected = int((mask > MASK_THRESHOLD).sum())
    if selected == 0:
        raise Pix2GifInputError(f"points: SAM's mask at these clicks covers nothing{where}; move the positive clicks "
                                "onto the object (or add more on it), or choose another mask_choice")
    if selected == mask.numel():
        raise Pix2GifInputError(f"points: SAM's mask at these clicks covers the whole image{where}, so nothing would "
                                "stay still; click on the object rather than the background, add negative clicks "
                                "on the background, or choose mask_choice '0 (smallest)'")


def refine_mask(mask: torch.Tensor, dilation: int, feather: int) -> torch.Tensor:
    """``mask`` ``(H, W)`` in [0, 1] grown by ``dilation`` pixels (square neighbourhood), then its edge softened
    over ``feather`` pixels (Gaussian blur, σ = feather / 2, truncated at ``feather``). 0, 0 = unchanged."""
    out = mask[None, None].float()
    if dilation > 0:
        out = F.max_pool2d(out, 2 * dilation + 1, stride=1, padding=dilation)
    if feather > 0:
        offsets = torch.arange(-feather, feather + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / (feather / 2)) ** 2)
        kernel = kernel / kernel.sum()
        out = F.pad(out, (feather, feather, feather, feather), mode="replicate")
        out = F.conv2d(F.conv2d(out, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return out[0, 0].clamp(0, 1)
