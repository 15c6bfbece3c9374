"""UNet, KL VAE and CLIP architectures read back from state-dict shapes, against key sets generated from known configs."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.diffusion.ldm_layout import clip_text_layout, clip_text_state, is_kl_vae, kl_vae_layout, unet_layout


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def _transformer(state: dict, prefix: str, channels: int, context: int, depth: int, linear: bool) -> None:
    state[prefix + "proj_in.weight"] = _meta(channels, channels) if linear else _meta(channels, channels, 1, 1)
    for block in range(depth):
        state[f"{prefix}transformer_blocks.{block}.attn2.to_k.weight"] = _meta(channels, context)


def _resblock(state: dict, prefix: str, channels_in: int, channels_out: int) -> None:
    state[prefix + "in_layers.0.weight"] = _meta(channels_in)
    state[prefix + "out_layers.3.weight"] = _meta(channels_out, channels_out, 3, 3)


def ldm_unet_keys(width: int, mult: list[int], res_blocks: int, attention_levels: set[int], context: int,
                  in_channels: int = 12, depth: int = 1, linear: bool = False) -> dict[str, torch.Tensor]:
    """The LDM openaimodel key set (shapes only) for a config, block by block as openaimodel builds it."""
    state = {"input_blocks.0.0.weight": _meta(width, in_channels, 3, 3)}
    block, channels, skips = 1, width, [width]
    for level, factor in enumerate(mult):
        for _ in range(res_blocks):
            _resblock(state, f"input_blocks.{block}.0.", channels, factor * width)
            channels = factor * width
            if level in attention_levels:
                _transformer(state, f"input_blocks.{block}.1.", channels, context, depth, linear)
            skips.append(channels)
            block += 1
        if level < len(mult) - 1:
            state[f"input_blocks.{block}.0.op.weight"] = _meta(channels, channels, 3, 3)
            skips.append(channels)
            block += 1
    _transformer(state, "middle_block.1.", channels, context, depth, linear)
    block = 0
    for level in reversed(range(len(mult))):
        for _ in range(res_blocks + 1):
            _resblock(state, f"output_blocks.{block}.0.", channels + skips.pop(), mult[level] * width)
            channels = mult[level] * width
            if level in attention_levels:
                _transformer(state, f"output_blocks.{block}.1.", channels, context, depth, linear)
            block += 1
    state["out.2.weight"] = _meta(4, width, 3, 3)
    return state


@pytest.mark.parametrize("width,mult,res_blocks,attention,context,depth,linear", [
    (320, [1, 2, 4, 4], 2, {0, 1, 2}, 768, 1, False),  # SD1.5 (Pix2Gif)
    (32, [1, 2, 4, 4], 2, {1, 2}, 768, 1, False),
    (64, [1, 2, 3], 1, {2}, 128, 2, True),
])
def test_unet_layout_recovers_the_config(width, mult, res_blocks, attention, context, depth, linear):
    layout = unet_layout(ldm_unet_keys(width, mult, res_blocks, attention, context, depth=depth, linear=linear))
    levels = range(len(mult))
    assert (layout.in_channels, layout.out_channels, layout.model_channels) == (12, 4, width)
    assert layout.channel_mult == tuple(mult) and layout.num_res_blocks == (res_blocks,) * len(mult)
    assert layout.input_transformer_depth == tuple(depth if lv in attention else 0 for lv in levels
                                                   for _ in range(res_blocks))
    assert layout.output_transformer_depth == tuple(depth if lv in attention else 0 for lv in reversed(levels)
                                                    for _ in range(res_blocks + 1))
    assert layout.middle_transformer_depth == depth
    assert layout.context_dim == context and layout.linear_projection == linear and layout.heads == 8


def test_unet_without_stem_or_with_missing_output_blocks_is_refused():
    state = ldm_unet_keys(32, [1, 2], 1, {1}, 64)
    with pytest.raises(Pix2GifInputError, match="input_blocks.0.0.weight"):
        unet_layout({k: v for k, v in state.items() if not k.startswith("input_blocks.0.")})
    with pytest.raises(Pix2GifInputError, match="output blocks"):
        unet_layout({k: v for k, v in state.items() if not k.startswith("output_blocks.3.")})


def _clip_keys(hidden: int, layers: int, intermediate: int, text_model: bool) -> dict[str, torch.Tensor]:
    prefix = "text_model." if text_model else ""
    state = {prefix + "embeddings.token_embedding.weight": _meta(49408, hidden),
             prefix + "embeddings.position_embedding.weight": _meta(77, hidden),
             prefix + "embeddings.position_ids": _meta(1, 77)}
    for layer in range(layers):
        state[f"{prefix}encoder.layers.{layer}.mlp.fc1.weight"] = _meta(intermediate, hidden)
        state[f"{prefix}encoder.layers.{layer}.self_attn.q_proj.weight"] = _meta(hidden, hidden)
    return state


@pytest.mark.parametrize("text_model", [True, False])
def test_clip_layout_of_clip_l_with_and_without_the_text_model_level(text_model):
    state = clip_text_state(_clip_keys(768, 12, 3072, text_model))
    assert all(key.startswith("text_model.") for key in state)
    assert "text_model.embeddings.position_ids" not in state
    layout = clip_text_layout(state)
    assert (layout.vocab_size, layout.hidden_size, layout.num_hidden_layers) == (49408, 768, 12)
    assert (layout.intermediate_size, layout.max_position_embeddings, layout.num_attention_heads) == (3072, 77, 12)


def test_clip_with_a_gap_in_its_layers_is_refused():
    state = clip_text_state(_clip_keys(64, 3, 128, True))
    state = {k: v for k, v in state.items() if ".layers.1." not in k}
    with pytest.raises(Pix2GifInputError, match="encoder layers"):
        clip_text_layout(state)


def ldm_vae_keys(ch: int, mult: list[int], res_blocks: int, z: int, embed: int,
                 attention_levels: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """The LDM AutoencoderKL key set (shapes only) that matters for the layout, encoder level by level."""
    state = {"encoder.conv_in.weight": _meta(ch, 3, 3, 3)}
    width = ch
    for level, factor in enumerate(mult):
        for block in range(res_blocks):
            state[f"encoder.down.{level}.block.{block}.conv1.weight"] = _meta(factor * ch, width, 3, 3)
            state[f"encoder.down.{level}.block.{block}.conv2.weight"] = _meta(factor * ch, factor * ch, 3, 3)
            width = factor * ch
            if level in attention_levels:
                state[f"encoder.down.{level}.attn.{block}.q.weight"] = _meta(width, width, 1, 1)
        if level < len(mult) - 1:
            state[f"encoder.down.{level}.downsample.conv.weight"] = _meta(width, width, 3, 3)
    state["encoder.conv_out.weight"] = _meta(2 * z, width, 3, 3)
    state["quant_conv.weight"] = _meta(2 * embed, 2 * z, 1, 1)
    state["post_quant_conv.weight"] = _meta(z, embed, 1, 1)
    state["decoder.conv_out.weight"] = _meta(3, ch, 3, 3)
    return state


@pytest.mark.parametrize("ch,mult,res_blocks,z,embed,attention", [
    (128, [1, 2, 4, 4], 2, 4, 4, ()),  # the SD1.x VAE (Pix2Gif's first stage)
    (32, [1, 1, 1, 1], 1, 4, 4, ()),
    (64, [1, 2], 3, 8, 6, (1,)),
])
def test_kl_vae_layout_recovers_the_config(ch, mult, res_blocks, z, embed, attention):
    state = ldm_vae_keys(ch, mult, res_blocks, z, embed, attention)
    assert is_kl_vae(state) and not is_kl_vae({"taesd_encoder.0.weight": _meta(64, 3, 3, 3)})
    layout = kl_vae_layout(state)
    assert (layout.ch, layout.ch_mult, layout.num_res_blocks) == (ch, tuple(mult), res_blocks)
    assert (layout.z_channels, layout.embed_dim, layout.in_channels, layout.out_ch) == (z, embed, 3, 3)
    assert layout.attn_resolutions == tuple(256 // 2 ** level for level in attention)
    assert layout.downscale == 2 ** (len(mult) - 1)


def test_vae_without_encoder_levels_is_refused():
    state = {k: v for k, v in ldm_vae_keys(32, [1, 1], 1, 4, 4).items() if not k.startswith("encoder.down.")}
    with pytest.raises(Pix2GifInputError, match="encoder levels"):
        kl_vae_layout(state)
