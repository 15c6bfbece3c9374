"""The architecture numbers of an I2VGen-XL UNet, from a diffusers ``config.json`` or from the weights' shapes.

The released model: channels 320/640/1280/1280, cross-attention (and temporal attention) at the first three
levels, 2 ResNets per level, 64-wide heads, 32 GroupNorm groups, 1024-wide text/image context (methods.md §6.2).
A smaller test model is the same code with other numbers.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Pix2GifInputError

#: heads of the temporal transformer right after ``conv_in`` (fixed in both implementations)
TRANSFORMER_IN_HEADS = 8
#: the noisy latent's channels (SD 2.1 VAE); the image-latent branch adds as many again before ``conv_in``
LATENT_CHANNELS = 4
_CROSS_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock3D", "DownBlock3D"
_CROSS_UP, _PLAIN_UP = "CrossAttnUpBlock3D", "UpBlock3D"


@dataclass(frozen=True)
class I2VGenXLConfig:
    """``attention_levels[i]``: whether down level ``i`` (and its mirrored up level) has spatial cross-attention
    and temporal attention; ``head_dim``: channels per attention head (heads = channels / head_dim)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    cross_attention_dim: int = 1024
    head_dim: int = 64
    norm_num_groups: int = 32

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], source: str) -> I2VGenXLConfig:
        """From the dict of a diffusers ``unet/config.json``; ``source`` names the file in errors."""
        down = tuple(config.get("down_block_types", (_CROSS_DOWN,) * 3 + (_PLAIN_DOWN,)))
        up = tuple(config.get("up_block_types", (_PLAIN_UP,) + (_CROSS_UP,) * 3))
        if any(kind not in (_CROSS_DOWN, _PLAIN_DOWN) for kind in down):
            raise Pix2GifInputError(f"'{source}': down_block_types {down} are not I2VGen-XL blocks.")
        levels = tuple(kind == _CROSS_DOWN for kind in down)
        expected_up = tuple(_CROSS_UP if cross else _PLAIN_UP for cross in reversed(levels))
        if up != expected_up:
            raise Pix2GifInputError(f"'{source}': up_block_types {up} do not mirror down_block_types {down}.")
        head_dim = config.get("attention_head_dim", 64)  # diffusers' name; used as channels per head
        if not isinstance(head_dim, int) or config.get("in_channels", LATENT_CHANNELS) != LATENT_CHANNELS:
            raise Pix2GifInputError(f"'{source}': attention_head_dim {head_dim!r} / in_channels "
                                    f"{config.get('in_channels')!r} are not an I2VGen-XL UNet's.")
        return cls(block_out_channels=tuple(config.get("block_out_channels", cls.block_out_channels)),
                   attention_levels=levels, layers_per_block=int(config.get("layers_per_block", 2)),
                   cross_attention_dim=int(config.get("cross_attention_dim", 1024)), head_dim=head_dim,
                   norm_num_groups=int(config.get("norm_num_groups") or 32))

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, tuple[int, ...]], norm_num_groups: int = 32) -> I2VGenXLConfig:
        """From the shapes of a state dict in diffusers names (GroupNorm groups leave no trace in shapes)."""
        levels = sorted({int(m.group(1)) for key in shapes if (m := re.match(r"down_blocks\.(\d+)\.", key))})
        channels = tuple(shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels)
        attention = tuple(f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in levels)
        layers = len({key.split(".")[3] for key in shapes if key.startswith("down_blocks.0.resnets.")})
        return cls(block_out_channels=channels, attention_levels=attention, layers_per_block=layers,
                   cross_attention_dim=shapes["context_embedding.0.weight"][1],
                   head_dim=shapes["transformer_in.proj_in.weight"][0] // TRANSFORMER_IN_HEADS,
                   norm_num_groups=norm_num_groups)
