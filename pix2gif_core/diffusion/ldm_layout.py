"""Architecture of an SD1.x-family UNet, KL VAE and CLIP text encoder, read from the shapes of their LDM weights.

Used to build models that exactly fit a checkpoint whose architecture is not one of ComfyUI's known ones
(Pix2Gif's 12-channel UNet, tiny test models). UNet keys are relative to ``model.diffusion_model.``
(openaimodel names: ``input_blocks.<i>.<j>``, ``middle_block``, ``output_blocks``, ``out``); VAE keys to
``first_stage_model.`` (``encoder.down.<i>.block.<j>``, ``quant_conv``, ``decoder``); CLIP keys to
``cond_stage_model.transformer.`` (Hugging Face ``CLIPTextModel`` names, with or without ``text_model.``).

What shapes cannot tell is fixed by convention: 8 attention heads in the UNet (SD1.x) and 64 channels per head in
the CLIP text encoder (every OpenAI/OpenCLIP text tower).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import Pix2GifInputError

UNET_HEADS = 8
CLIP_HEAD_CHANNELS = 64
CLIP_TEXT_PREFIX = "text_model."
_CLIP_IGNORED = ("text_model.embeddings.position_ids",)
_INPUT_BLOCK = re.compile(r"^input_blocks\.(\d+)\.")
_OUTPUT_BLOCK = re.compile(r"^output_blocks\.(\d+)\.")
_CLIP_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")
_VAE_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.")
_VAE_BLOCK = re.compile(r"^encoder\.down\.0\.block\.(\d+)\.")
VAE_RESOLUTION = 256


@dataclass(frozen=True)
class UNetLayout:
    """Hyper-parameters of an openaimodel UNet (SD1.x family, spatial transformers, no class/ADM input).

    ``num_res_blocks`` and ``channel_mult``: one entry per resolution level (from the finest);
    ``input_transformer_depth``: transformer blocks after each input ResBlock, in ``input_blocks`` order (0 = none);
    ``output_transformer_depth``: the same for each output block, ``output_blocks.0`` first;
    ``context_dim``: width of the cross-attention context; ``linear_projection``: ``proj_in`` is a Linear (SD2
    style) rather than a 1×1 conv.
    """

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    input_transformer_depth: tuple[int, ...]
    middle_transformer_depth: int
    output_transformer_depth: tuple[int, ...]
    context_dim: int
    linear_projection: bool
    heads: int = UNET_HEADS


@dataclass(frozen=True)
class ClipTextLayout:
    """Hyper-parameters of a CLIP text transformer (Hugging Face ``CLIPTextConfig`` names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    max_position_embeddings: int

    @property
    def num_attention_heads(self) -> int:
        return max(1, self.hidden_size // CLIP_HEAD_CHANNELS)


@dataclass(frozen=True)
class KLVaeLayout:
    """Hyper-parameters of an LDM ``AutoencoderKL`` (``ddconfig`` names; ``attn_resolutions`` at resolution 256)."""

    in_channels: int
    out_ch: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    embed_dim: int

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def unet_layout(state: Mapping[str, torch.Tensor], source: str = "UNet") -> UNetLayout:
    """Read the UNet architecture from ``state`` (keys relative to ``model.diffusion_model.``)."""
    stem = _required(state, "input_blocks.0.0.weight", source)
    head = _required(state, "out.2.weight", source)
    model_channels = stem.shape[0]
    blocks = sorted({int(m.group(1)) for key in state if (m := _INPUT_BLOCK.match(key))} - {0})
    levels: list[list[int]] = [[]]
    depths: list[int] = []
    for index in blocks:
        prefix = f"input_blocks.{index}."
        if prefix + "0.op.weight" in state:
            levels.append([])
            continue
        levels[-1].append(_required(state, prefix + "0.out_layers.3.weight", source).shape[0])
        depths.append(_transformer_depth(state, prefix + "1."))
    if not all(levels):
        raise Pix2GifInputError(f"{source}: a resolution level has no ResBlock; this is not an SD-style UNet.")
    widths = [level[-1] for level in levels]
    if any(width % model_channels for width in widths):
        raise Pix2GifInputError(
            f"{source}: ResBlock widths {widths} are not multiples of the stem width {model_channels}."
        )
    outputs = sorted({int(m.group(1)) for key in state if (m := _OUTPUT_BLOCK.match(key))})
    expected_outputs = sum(len(level) + 1 for level in levels)
    if outputs != list(range(expected_outputs)):
        raise Pix2GifInputError(
            f"{source}: {len(outputs)} output blocks for {len(levels)} levels of {[len(l) for l in levels]} ResBlocks;"
            f" an SD-style UNet has {expected_outputs}."
        )
    context_keys = [key for key in state if key.endswith("attn2.to_k.weight")]
    if not context_keys:
        raise Pix2GifInputError(f"{source}: no cross-attention ('attn2.to_k.weight'); not a text-conditioned UNet.")
    projections = [state[key] for key in state if key.endswith("proj_in.weight")]
    return UNetLayout(
        in_channels=stem.shape[1],
        out_channels=head.shape[0],
        model_channels=model_channels,
        channel_mult=tuple(width // model_channels for width in widths),
        num_res_blocks=tuple(len(level) for level in levels),
        input_transformer_depth=tuple(depths),
        middle_transformer_depth=_transformer_depth(state, "middle_block.1."),
        output_transformer_depth=tuple(_transformer_depth(state, f"output_blocks.{i}.1.") for i in outputs),
        context_dim=state[context_keys[0]].shape[1],
        linear_projection=projections[0].dim() == 2,
    )


def _transformer_depth(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of ``transformer_blocks`` in the spatial transformer at ``prefix`` (0 when there is none)."""
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def is_kl_vae(state: Mapping[str, torch.Tensor]) -> bool:
    """True for LDM ``AutoencoderKL`` weights (as opposed to e.g. TAESD)."""
    return "encoder.conv_in.weight" in state and "quant_conv.weight" in state


def kl_vae_layout(state: Mapping[str, torch.Tensor], source: str = "VAE") -> KLVaeLayout:
    """Read the ``AutoencoderKL`` architecture from ``state`` (keys relative to ``first_stage_model.``)."""
    stem = _required(state, "encoder.conv_in.weight", source)
    levels = sorted({int(m.group(1)) for key in state if (m := _VAE_LEVEL.match(key))})
    blocks = {int(m.group(1)) for key in state if (m := _VAE_BLOCK.match(key))}
    if levels != list(range(len(levels))) or not levels or not blocks:
        raise Pix2GifInputError(f"{source}: encoder levels {levels} are missing or not numbered 0..N-1.")
    last_block = max(blocks)
    widths = [_required(state, f"encoder.down.{level}.block.{last_block}.conv2.weight", source).shape[0]
              for level in levels]
    ch = stem.shape[0]
    return KLVaeLayout(
        in_channels=stem.shape[1],
        out_ch=_required(state, "decoder.conv_out.weight", source).shape[0],
        ch=ch,
        ch_mult=tuple(width // ch for width in widths),
        num_res_blocks=last_block + 1,
        attn_resolutions=tuple(VAE_RESOLUTION // 2 ** level for level in levels
                               if f"encoder.down.{level}.attn.0.q.weight" in state),
        z_channels=_required(state, "encoder.conv_out.weight", source).shape[0] // 2,
        embed_dim=_required(state, "quant_conv.weight", source).shape[0] // 2,
    )


def clip_text_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text weights under ``text_model.`` names (old LDM files omit that level); ``position_ids`` dropped."""
    renamed = {key if key.startswith(CLIP_TEXT_PREFIX) else CLIP_TEXT_PREFIX + key: value
               for key, value in state.items()}
    return {key: value for key, value in renamed.items() if key not in _CLIP_IGNORED}


def clip_text_layout(state: Mapping[str, torch.Tensor], source: str = "CLIP text encoder") -> ClipTextLayout:
    """Read the text-transformer architecture from ``state`` as returned by :func:`clip_text_state`."""
    tokens = _required(state, "text_model.embeddings.token_embedding.weight", source)
    positions = _required(state, "text_model.embeddings.position_embedding.weight", source)
    layers = {int(m.group(1)) for key in state if (m := _CLIP_LAYER.match(key))}
    if layers != set(range(len(layers))) or not layers:
        raise Pix2GifInputError(f"{source}: encoder layers {sorted(layers)} are missing or not numbered 0..N-1.")
    fc1 = _required(state, "text_model.encoder.layers.0.mlp.fc1.weight", source)
    return ClipTextLayout(vocab_size=tokens.shape[0], hidden_size=tokens.shape[1], num_hidden_layers=len(layers),
                          intermediate_size=fc1.shape[0], max_position_embeddings=positions.shape[0])


def _required(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise Pix2GifInputError(f"{source}: weight '{key}' is missing; the file is incomplete or of another kind.")
    return state[key]
