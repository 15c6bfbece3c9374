"""The I2VGen-XL UNet against diffusers' ``I2VGenXLUNet`` (the independent peer; a test-only dependency) on the
same tiny random weights, loaded through the pack's loaders from both layouts."""
from __future__ import annotations

import torch
import pytest

from pix2gif_core.i2vgen_xl.checkpoint import load_unet
from pix2gif_core.i2vgen_xl.config import I2VGenXLConfig
from tests.fixtures.i2vgen_xl_weights import TINY_CONFIG, random_weights, to_vgen_layout, write_diffusers_folder

diffusers_unet = pytest.importorskip("diffusers.models.unets.unet_i2vgen_xl",
                                     reason="diffusers (test-only peer) is not installed; see .ci/setup")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def peer() -> torch.nn.Module:
    """diffusers' UNet at the tiny config with random (non-zero) weights."""
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in TINY_CONFIG.items() if not k.startswith("_")}
    model = diffusers_unet.I2VGenXLUNet(**config).eval()
    model.load_state_dict(random_weights(model.state_dict(), seed=3))
    return model


def _inputs(frames: int = 5, height: int = 12, width: int = 10, batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    dim = TINY_CONFIG["cross_attention_dim"]
    return {"x": torch.randn(batch, 4, frames, height, width, generator=g),
            "timestep": torch.tensor([999, 37][:batch]), "text": torch.randn(batch, 77, dim, generator=g),
            "image_latent": torch.randn(batch, 4, height, width, generator=g),
            "image_embedding": torch.randn(batch, dim, generator=g), "fps": torch.tensor([16.0, 8.0][:batch])}


def _peer_output(peer: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """diffusers' pipeline input: the first-frame latent, then frames of the constant (k+1)/(F−1)."""
    latent, frames = inputs["image_latent"][:, :, None], inputs["x"].shape[2]
    sequence = torch.cat([latent] + [torch.ones_like(latent) * (k + 1) / (frames - 1) for k in range(frames - 1)],
                         dim=2)
    with torch.no_grad():
        return peer(inputs["x"], inputs["timestep"], inputs["fps"], sequence, inputs["image_embedding"],
                    inputs["text"], return_dict=False)[0]


def _ours(unet, inputs):
    with torch.no_grad():
        return unet(**inputs)


@pytest.mark.parametrize("size", [(5, 12, 10), (3, 8, 8)])
def test_diffusers_folder_matches_peer(peer, tmp_path, size):
    folder = write_diffusers_folder(str(tmp_path / "unet"), peer.state_dict())
    inputs = _inputs(*size)
    expected = _peer_output(peer, inputs)
    assert expected.abs().max() > 0.1  # a live network, not zero-initialised output layers
    assert (_ours(load_unet(folder), inputs) - expected).abs().max() <= TOLERANCE


def test_single_renamed_file_reads_the_config_from_shapes(peer, tmp_path):
    write_diffusers_folder(str(tmp_path / "unet"), peer.state_dict())
    single = tmp_path / "i2vgen_xl_unet.safetensors"
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").rename(single)
    unet = load_unet(str(single))
    assert unet.config == I2VGenXLConfig.from_diffusers(TINY_CONFIG, "config")
    inputs = _inputs()
    assert (_ours(unet, inputs) - _peer_output(peer, inputs)).abs().max() <= TOLERANCE


def test_vgen_pth_matches_peer_with_the_doubled_concat(peer, tmp_path):
    path = tmp_path / "i2vgen_xl_00854500.pth"
    torch.save(to_vgen_layout(peer.state_dict()), path)
    inputs = _inputs()
    expected = _peer_output(peer, inputs)
    assert (_ours(load_unet(str(path)), inputs) - expected).abs().max() <= TOLERANCE


def test_the_image_latent_changes_the_output(peer, tmp_path):
    unet = load_unet(write_diffusers_folder(str(tmp_path / "unet"), peer.state_dict()))
    inputs = _inputs()
    other = dict(inputs, image_latent=inputs["image_latent"].flip(-1))
    assert (_ours(unet, inputs) - _ours(unet, other)).abs().max() > 1e-3
