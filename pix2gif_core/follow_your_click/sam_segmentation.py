"""Segment-Anything masks from clicks, run through ``transformers`` (``SamModel`` + its processor).

A SAM model is read from a folder in the Hugging Face layout (``config.json`` with ``model_type`` "sam" and
``model.safetensors``, e.g. a download of ``facebook/sam-vit-base``); a ``preprocessor_config.json`` there is used,
else the processor is built for the model's input size (longest edge resized to ``image_size``, padded square).
Multimask output gives three candidate masks per prompt; the best-scoring (predicted IoU) is taken unless an index
is chosen. Masks are the logits upsampled to the image by the processor's own post-processing, thresholded at 0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Pix2GifInputError
from .click_points import Clicks

SAM_MODEL_TYPE = "sam"
#: ``model_type`` of other segmentation families a user may put in models/sams, with what to do instead
OTHER_FAMILIES = {"sam2": "SAM 2", "sam2_video": "SAM 2 (video)", "sam_hq": "SAM-HQ", "sam3": "SAM 3",
                  "sam3_tracker": "SAM 3", "edgetam": "EdgeTAM"}
MASK_THRESHOLD = 0.0
BEST = -1


@dataclass(frozen=True)
class SamSegmenter:
    """A loaded SAM: ``model`` (``SamModel``, eval mode), ``processor`` (``SamProcessor``), ``name`` for messages."""

    model: torch.nn.Module
    processor: object
    name: str


def _processor_for(folder: str, image_size: int):
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        return SamProcessor(SamImageProcessorPil.from_pretrained(folder))
    return SamProcessor(SamImageProcessorPil(size={"longest_edge": image_size},
                                             pad_size={"height": image_size, "width": image_size}))


def load_sam(folder: str) -> SamSegmenter:
    """The SAM in ``folder`` (Hugging Face layout); raises :class:`Pix2GifInputError` naming the folder for files
    that are not a SAM folder or a SAM of another family."""
    name = os.path.basename(os.path.normpath(folder))
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise Pix2GifInputError(
            f"'{name}' is not a Segment-Anything folder (no config.json); put a Hugging Face SAM download (e.g. "
            "facebook/sam-vit-base: config.json + model.safetensors) in its own folder under models/sams")
    with open(config_path, encoding="utf-8") as file:
        model_type = json.load(file).get("model_type")
    if model_type != SAM_MODEL_TYPE:
        family = OTHER_FAMILIES.get(model_type, f"model_type '{model_type}'")
        raise Pix2GifInputError(
            f"'{name}' is a {family} model, not Segment Anything (model_type 'sam'); this node runs SAM ViT-B/L/H: "
            "use e.g. facebook/sam-vit-base / sam-vit-huge in models/sams")
    from transformers import SamModel

    model = SamModel.from_pretrained(folder, use_safetensors=True).eval()
    return SamSegmenter(model, _processor_for(folder, int(model.config.vision_config.image_size)), name)


def segment(segmenter: SamSegmenter, image: np.ndarray, clicks: Clicks, *, mask_index: int = BEST) -> torch.Tensor:
    """Mask ``(H, W)`` float {0, 1} of the object the clicks select in ``image`` ``(H, W, 3)`` uint8.

    ``mask_index``: :data:`BEST` for the candidate with the highest predicted IoU, else 0–2 (SAM's small → large
    multimask outputs)."""
    processor, model = segmenter.processor, segmenter.model
    device = next(model.parameters()).device
    inputs = processor(images=image, input_points=[[list(map(list, clicks.points))]],
                       input_labels=[[list(clicks.labels)]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**{key: value.to(device) for key, value in inputs.items()
                           if key not in ("original_sizes", "reshaped_input_sizes")}, multimask_output=True)
    logits = processor.image_processor.post_process_masks(outputs.pred_masks.float().cpu(), inputs["original_sizes"],
                                                          inputs["reshaped_input_sizes"], binarize=False)[0][0]
    chosen = int(outputs.iou_scores[0, 0].argmax()) if mask_index == BEST else mask_index
    return (logits[chosen] > MASK_THRESHOLD).float()


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
