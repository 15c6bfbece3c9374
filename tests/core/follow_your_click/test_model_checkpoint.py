"""Reading Follow-Your-Click checkpoints: the official layout in its wrappers, its parts, and the files a user is
likelier to pick by mistake – each refused by what it is."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.diffusion.ldm_layout import UNetLayout
from pix2gif_core.follow_your_click.model_checkpoint import (
    ldm_unet_overrides,
    load_follow_your_click_checkpoint,
    split_follow_your_click_checkpoint,
)
from tests.fixtures.follow_your_click_checkpoints import write_ckpt, write_safetensors
from tests.fixtures.motion_checkpoints import make_motion_state_dict

LAYOUT = UNetLayout(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 4, 4),
                    num_res_blocks=(2, 2, 2, 2), input_transformer_depth=(1, 1, 1, 1, 1, 1, 0, 0),
                    middle_transformer_depth=1, output_transformer_depth=(0, 0, 0) + (1,) * 9, context_dim=64,
                    linear_projection=False)


def checkpoint(motion_version: str = "v1", in_channels: int = 9) -> dict[str, torch.Tensor]:
    state = {"conv_in.weight": torch.randn(32, in_channels, 3, 3), "conv_in.bias": torch.randn(32),
             "down_blocks.0.resnets.0.conv1.weight": torch.randn(32, 32, 3, 3),
             "up_blocks.1.upsamplers.0.conv.bias": torch.randn(128)}
    for name in ("fps_embedding", "motion_embedding"):
        state |= {f"{name}.linear_1.weight": torch.randn(128, 32), f"{name}.linear_1.bias": torch.randn(128),
                  f"{name}.linear_2.weight": torch.zeros(128, 128), f"{name}.linear_2.bias": torch.zeros(128)}
    return state | make_motion_state_dict(motion_version, seed=0)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_the_official_layout_splits_into_unet_motion_modules_and_scalar_embeddings(tmp_path, suffix):
    state = checkpoint()
    path = tmp_path / f"fyc{suffix}"
    (write_ckpt if suffix == ".ckpt" else write_safetensors)(path, state)  # .ckpt: state_dict + module. prefix
    weights = load_follow_your_click_checkpoint(str(path), "fyc")
    assert set(weights.unet) == {"conv_in.weight", "conv_in.bias", "down_blocks.0.resnets.0.conv1.weight",
                                 "up_blocks.1.upsamplers.0.conv.bias"}
    assert torch.equal(weights.unet["conv_in.weight"], state["conv_in.weight"])
    config = weights.motion_modules.config
    assert (config.version, config.pe_length, config.mid_channels) == ("v1", 24, None)
    assert torch.equal(weights.scalar_embeddings["motion_embedding"]["linear_1.weight"],
                       state["motion_embedding.linear_1.weight"])
    overrides = ldm_unet_overrides(weights.unet, LAYOUT, "fyc")
    assert set(overrides) == {"input_blocks.0.0.weight", "input_blocks.0.0.bias", "input_blocks.1.0.in_layers.2.weight",
                              "output_blocks.5.2.conv.bias"}


@pytest.mark.parametrize("state, words", [
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)},
     ["Stable Diffusion checkpoint", "Load Checkpoint"]),
    (make_motion_state_dict("v1"), ["AnimateDiff motion module", "Load Motion Model"]),
    ({k: v for k, v in checkpoint(in_channels=4).items() if ".motion_modules." not in k},
     ["diffusers Stable Diffusion UNet", "4 channels"]),
    (checkpoint("v2"), ["mid-block motion module", "v2 motion module", "without the v2 module"]),
    ({k: v for k, v in checkpoint().items() if ".motion_modules." not in k}, ["without motion modules"]),
    ({k: v for k, v in checkpoint().items() if not k.startswith("fps_embedding.linear_2")},
     ["fps_embedding.linear_2.weight", "incomplete"]),
    ({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)}, ["not a UNet checkpoint"]),
])
def test_other_files_are_refused_by_what_they_are(state, words):
    with pytest.raises(Pix2GifInputError) as refused:
        split_follow_your_click_checkpoint(state, "ckpt_name 'file.safetensors'")
    assert all(word in str(refused.value) for word in words + ["'file.safetensors'"]), str(refused.value)


def test_motion_modules_of_another_length_are_refused():
    state = checkpoint("v1")
    state |= {key: torch.zeros(1, 32, value.shape[-1]) for key, value in state.items() if key.endswith("pos_encoder.pe")}
    with pytest.raises(Pix2GifInputError, match="32 positions"):
        split_follow_your_click_checkpoint(state, "fyc")


def test_weights_of_no_sd15_unet_are_named():
    weights = split_follow_your_click_checkpoint(checkpoint() | {"add_embedding.linear_1.weight": torch.zeros(1)},
                                                 "fyc")
    with pytest.raises(Pix2GifInputError, match="add_embedding.linear_1.weight"):
        ldm_unet_overrides(weights.unet, LAYOUT, "fyc")
