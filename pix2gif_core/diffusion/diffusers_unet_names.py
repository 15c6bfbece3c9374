"""Diffusers ``UNet2DConditionModel`` weight names → the LDM (openaimodel) names of the same SD1.x-family UNet.

Diffusers counts blocks per resolution level (``down_blocks.<level>.resnets.<j>``, ``.attentions.<j>``,
``.downsamplers.0``; ``up_blocks`` from the coarsest level), LDM counts them flat (``input_blocks.<n>.<layer>``,
``output_blocks.<n>.<layer>``). Where a block sits follows from the :class:`~.ldm_layout.UNetLayout`: level ``i``
of the encoder starts at input block ``1 + Σ_{k<i}(R_k + 1)`` (R = ResBlocks of the level, +1 for its
downsampler); decoder level ``u`` (level ``L−1−u`` of the encoder) has ``R + 1`` output blocks, the upsampler
after the last one's ResBlock (layer 1) or attention (layer 2). Names inside a ResBlock differ
(``norm1`` → ``in_layers.0`` …); inside a spatial transformer they are the same.
"""
from __future__ import annotations

import re

from .ldm_layout import UNetLayout

_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0", "conv_out": "out.2",
}
_RESNET = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
    "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")
_TOP = re.compile(r"^(conv_in|time_embedding\.linear_[12]|conv_norm_out|conv_out)\.(weight|bias)$")
_PARAMETER = re.compile(r"^(\w+)\.(weight|bias)$")


def _resnet_name(rest: str) -> str | None:
    match = _PARAMETER.match(rest)
    if match is None or match.group(1) not in _RESNET:
        return None
    return f"{_RESNET[match.group(1)]}.{match.group(2)}"


def _first_input_block(layout: UNetLayout, level: int) -> int:
    return 1 + sum(blocks + 1 for blocks in layout.num_res_blocks[:level])


def _first_output_block(layout: UNetLayout, up_level: int) -> int:
    return sum(blocks + 1 for blocks in reversed(layout.num_res_blocks[len(layout.num_res_blocks) - up_level:]))


def ldm_unet_name(name: str, layout: UNetLayout) -> str | None:
    """The LDM name (relative to ``model.diffusion_model.``) of diffusers UNet weight ``name``, or None when
    ``name`` is no weight of such a UNet at ``layout`` (a motion module, an extra embedding, a level it lacks)."""
    if match := _TOP.match(name):
        return f"{_TOP_LEVEL[match.group(1)]}.{match.group(2)}"
    if match := _MID.match(name):
        kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
        if kind == "attentions":
            return f"middle_block.1.{rest}" if index == 0 else None
        resnet = _resnet_name(rest)
        return f"middle_block.{2 * index}.{resnet}" if resnet and index in (0, 1) else None
    match = _BLOCK.match(name)
    if match is None:
        return None
    direction, level, kind, index, rest = match.group(1), int(match.group(2)), match.group(3), int(match.group(4)), \
        match.group(5)
    levels = len(layout.num_res_blocks)
    if level >= levels:
        return None
    if direction == "down_blocks":
        blocks = layout.num_res_blocks[level]
        first = _first_input_block(layout, level)
        if kind == "downsamplers":
            return f"input_blocks.{first + blocks}.0.op.{rest.removeprefix('conv.')}" if index == 0 \
                and rest.startswith("conv.") and level < levels - 1 else None
        if index >= blocks:
            return None
    else:
        blocks = layout.num_res_blocks[levels - 1 - level] + 1
        first = _first_output_block(layout, level)
        if kind == "upsamplers":
            last = first + blocks - 1
            layer = 2 if layout.output_transformer_depth[last] else 1
            return f"output_blocks.{last}.{layer}.conv.{rest.removeprefix('conv.')}" if index == 0 \
                and rest.startswith("conv.") and level < levels - 1 else None
        if index >= blocks or kind == "downsamplers":
            return None
    prefix = "input_blocks" if direction == "down_blocks" else "output_blocks"
    if kind == "attentions":
        return f"{prefix}.{first + index}.1.{rest}"
    if kind == "resnets":
        resnet = _resnet_name(rest)
        return f"{prefix}.{first + index}.0.{resnet}" if resnet else None
    return None
