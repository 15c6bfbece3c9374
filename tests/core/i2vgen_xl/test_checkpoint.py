"""Loading I2VGen-XL weights: dtype as stored, strict keys and shapes naming the file, other models refused."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.i2vgen_xl.checkpoint import load_unet
from tests.fixtures.i2vgen_xl_weights import tiny_unet_weights, to_vgen_layout, write_diffusers_folder


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return tiny_unet_weights(seed=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_stay_half(state, tmp_path, dtype):
    folder = write_diffusers_folder(str(tmp_path / "unet"), state, dtype, "diffusion_pytorch_model.fp16.safetensors")
    unet = load_unet(folder)
    assert {p.dtype for p in unet.parameters()} == {dtype}
    assert torch.equal(unet.conv_out.weight, state["conv_out.weight"].to(dtype))


def test_vgen_pth_keeps_fp16_and_doubles_the_concat_channels_of_conv_in(state, tmp_path):
    path = tmp_path / "i2vgen_xl_00854500.pth"
    half = {k: v.half() for k, v in state.items()}
    torch.save(to_vgen_layout(half), path)
    unet = load_unet(str(path))
    assert unet.conv_in.weight.dtype == torch.float16
    assert torch.equal(unet.conv_in.weight, half["conv_in.weight"])  # halved in the file, ×2 on load: exact


def test_a_missing_tensor_names_the_file_and_the_key(state, tmp_path):
    damaged = dict(state)
    del damaged["mid_block.attentions.0.proj_in.weight"]
    folder = write_diffusers_folder(str(tmp_path / "unet"), damaged)
    with pytest.raises(Pix2GifInputError, match=r"diffusion_pytorch_model\.safetensors.*missing: "
                                                r"mid_block\.attentions\.0\.proj_in\.weight"):
        load_unet(folder)


def test_a_wrong_shape_is_named(state, tmp_path):
    damaged = dict(state, **{"fps_embedding.2.bias": torch.zeros(7)})
    path = tmp_path / "unet.safetensors"
    safetensors.torch.save_file(damaged, str(path))
    with pytest.raises(Pix2GifInputError, match=r"unet\.safetensors.*wrong shape: fps_embedding\.2\.bias \(7,\)"):
        load_unet(str(path))


@pytest.mark.parametrize("keys, what", [
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}, "Stable Diffusion image"),
    ({"model.diffusion_model.input_blocks.1.0.time_stack.0.weight": (4,)}, "Stable Video Diffusion"),
])
def test_other_models_are_refused_by_name(tmp_path, keys, what):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(Pix2GifInputError, match=rf"other\.safetensors' is not an I2VGen-XL UNet.*{what}"):
        load_unet(str(path))


def test_a_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "i2vgen_xl.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(Pix2GifInputError, match="refused for safety"):
        load_unet(str(path))


def test_a_folder_without_weights_says_which_files_it_wants(tmp_path):
    with pytest.raises(Pix2GifInputError, match="holds no diffusers UNet weights"):
        load_unet(str(tmp_path))
