"""Original Segment-Anything checkpoints (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``, or ``.safetensors`` conversions of them) as transformers' ``SamModel``.

The ViT variant is read from the tensor shapes (width from the patch embedding, depth from the block count, head
size from the relative positions, global-attention blocks from their longer relative-position tables, window size
from the others); the mask decoder's 8 heads are not in the shapes and are SAM's fixed value. Names are converted
in memory to transformers' (the facts of its ``convert_sam_to_hf.py``) and loaded strictly: a missing or
unexpected tensor is an error naming the file. Files of other families are named (:func:`other_family`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..errors import Pix2GifInputError
from ..weights_file import read_state_dict_file

#: a tensor every original SAM checkpoint has
SAM_MARKERS = ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_token.weight")
#: SAM's two-way transformer heads (segment_anything.build_sam); the shapes cannot tell them
MASK_DECODER_HEADS = 8
#: original → transformers names of SAM's sub-modules that are numbered nn.Sequential entries or renamed
_RENAMES = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.blocks\.", ".layers."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.neck\.0\.", ".neck.conv1."), (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."), (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."), (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."), (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."), (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.norm(\d|_final_attn)\.", r".layer_norm\1."),
)
#: the mask decoder's MLPs: ``layers.0 … layers.{n-1}`` there, ``proj_in, layers.0 … layers.{n-3}, proj_out`` here
_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.+)$")
#: unused constants some exports carry (SAM normalises in its processor)
_DROPPED = ("pixel_mean", "pixel_std")


def is_original_sam(state_dict: Mapping[str, object]) -> bool:
    return all(key in state_dict for key in SAM_MARKERS) and "mask_decoder.hf_token.weight" not in state_dict


def other_family(state_dict: Mapping[str, object]) -> str | None:
    """What a weights file that is not an original SAM checkpoint is, with where it belongs; None for SAM."""
    if is_original_sam(state_dict):
        return None
    inner = state_dict.get("model")
    keys = list(inner) if isinstance(inner, Mapping) else list(state_dict)

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if has("image_encoder.trunk.") or has("sam_mask_decoder."):
        return ("an original SAM 2 checkpoint (sam2_hiera_*.pt), which this node does not convert; use the "
                "Hugging Face folder of the same model instead (e.g. facebook/sam2.1-hiera-large: config.json + "
                "model.safetensors)")
    if "mask_decoder.hf_token.weight" in keys:
        return "a SAM-HQ checkpoint, which transformers does not run; use an original sam_vit_*.pth"
    if has("image_encoder.layers."):
        return "a MobileSAM / TinyViT checkpoint, which transformers does not run; use an original sam_vit_*.pth"
    if has("vision_encoder.") and has("mask_decoder."):
        return ("a transformers SAM weights file without its config.json; put it with its config.json into a "
                "folder of its own in models/sams")
    if has("model.diffusion_model.") or has("first_stage_model."):
        return "a Stable Diffusion checkpoint; it belongs in models/checkpoints"
    if has("text_model.") or has("vision_model.") or has("visual.") or has("transformer.resblocks."):
        return "a CLIP model; it belongs in models/clip or models/clip_vision"
    return "not a Segment-Anything checkpoint (no image_encoder / mask_decoder tensors)"


def _count(state_dict: Mapping[str, object], pattern: str) -> int:
    found = re.compile(pattern)
    return len({match.group(1) for key in state_dict if (match := found.match(key))})


def sam_config_from_shapes(state_dict: Mapping[str, torch.Tensor]):
    """transformers ``SamConfig`` of the original checkpoint ``state_dict`` (ViT-B/L/H or any other width)."""
    from transformers import SamConfig

    patch = state_dict["image_encoder.patch_embed.proj.weight"]  # (width, 3, patch, patch)
    width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(state_dict["image_encoder.pos_embed"].shape[1])  # (1, grid, grid, width)
    depth = _count(state_dict, r"^image_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$")
    positions = [tuple(state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape) for i in range(depth)]
    global_blocks = [i for i, (length, _) in enumerate(positions) if length == 2 * grid - 1]
    window = next(((length + 1) // 2 for length, _ in positions if length != 2 * grid - 1), 14)
    channels = int(state_dict["image_encoder.neck.0.weight"].shape[0])
    decoder_width = int(state_dict["mask_decoder.iou_token.weight"].shape[1])
    attention_width = int(state_dict["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"]
                          .shape[0])
    return SamConfig(
        vision_config=dict(
            hidden_size=width, output_channels=channels, num_hidden_layers=depth,
            num_attention_heads=width // positions[0][1], image_size=grid * patch_size, patch_size=patch_size,
            window_size=window, global_attn_indexes=global_blocks,
            num_pos_feats=int(state_dict["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape[1]),
            mlp_dim=int(state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0])),
        prompt_encoder_config=dict(
            hidden_size=channels, image_size=grid * patch_size, patch_size=patch_size,
            mask_input_channels=int(state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            num_point_embeddings=_count(state_dict, r"^prompt_encoder\.point_embeddings\.(\d+)\.weight$")),
        mask_decoder_config=dict(
            hidden_size=decoder_width,
            mlp_dim=int(state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
            num_hidden_layers=_count(state_dict, r"^mask_decoder\.transformer\.layers\.(\d+)\."),
            num_attention_heads=MASK_DECODER_HEADS, attention_downsample_rate=decoder_width // attention_width,
            num_multimask_outputs=int(state_dict["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
            iou_head_depth=_count(state_dict, r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
            iou_head_hidden_dim=int(state_dict["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0])))


def to_transformers_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original checkpoint's tensors under transformers' ``SamModel`` names (the same tensors, not copies)."""
    depths: dict[str, int] = {}
    for key in state_dict:
        if match := _MLP.match(key):
            depths[match.group(1)] = max(depths.get(match.group(1), 0), int(match.group(2)) + 1)
    converted = {}
    for key, tensor in state_dict.items():
        if key in _DROPPED:
            continue
        if match := _MLP.match(key):
            mlp, index, rest = match.group(1), int(match.group(2)), match.group(3)
            layer = "proj_in" if index == 0 else "proj_out" if index == depths[mlp] - 1 else f"layers.{index - 1}"
            key = f"{mlp}.{layer}.{rest}"
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        converted[key] = tensor
    shared = converted.get("prompt_encoder.shared_embedding.positional_embedding")
    if shared is not None:  # one module in transformers, stored under both names
        converted["shared_image_embedding.positional_embedding"] = shared
    return converted


def load_original_sam(path: str):
    """``SamModel`` (eval mode) of the original SAM checkpoint at ``path`` (``.pth`` read with
    ``weights_only=True``, or ``.safetensors``); raises :class:`Pix2GifInputError` naming the file for another
    family or for tensors that do not fit."""
    from transformers import SamModel

    name = os.path.basename(path)
    state_dict = read_state_dict_file(path)
    family = other_family(state_dict)
    if family is not None:
        raise Pix2GifInputError(f"'{name}' is {family}")
    try:
        config = sam_config_from_shapes(state_dict)
    except (KeyError, IndexError) as error:
        raise Pix2GifInputError(f"'{name}' lacks the Segment-Anything tensor {error}; the file is incomplete or "
                                "damaged: download it again") from None
    with torch.device("meta"):
        model = SamModel(config)
    try:
        model.load_state_dict(to_transformers_names(state_dict), strict=True, assign=True)
    except RuntimeError as error:
        detail = str(error).split("\n", 1)[-1].strip()[:400]
        raise Pix2GifInputError(f"'{name}' does not fit Segment Anything's layout ({detail}); the file is damaged "
                                "or of another SAM variant: use an original sam_vit_b/l/h checkpoint") from None
    return model.eval()
