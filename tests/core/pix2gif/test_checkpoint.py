"""Pix2Gif Lightning checkpoint key mapping, written to disk by the tiny-fixture writer and read back."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.pix2gif.checkpoint import build_flownet, build_interval_embedding, split_pix2gif_checkpoint
from tests.fixtures.pix2gif_checkpoints import EMA_OFFSET, make_pix2gif_state_dict, write_lightning_ckpt


def _tiny_unet(in_channels: int = 12) -> dict[str, torch.Tensor]:
    return {
        "input_blocks.0.0.weight": torch.randn(8, in_channels, 3, 3),
        "input_blocks.0.0.bias": torch.randn(8),
        "middle_block.1.proj_in.weight": torch.randn(8, 8, 1, 1),
        "out.2.weight": torch.randn(4, 8, 3, 3),
    }


VAE = {"encoder.conv_in.weight": torch.randn(4, 3, 3, 3), "decoder.conv_out.bias": torch.randn(3)}
CLIP = {"text_model.embeddings.token_embedding.weight": torch.randn(10, 768)}


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    state = make_pix2gif_state_dict(_tiny_unet(), VAE, CLIP, seed=1)
    return write_lightning_ckpt(tmp_path_factory.mktemp("pix2gif") / "pix2gif.ckpt", state, global_step=23999)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_split_takes_the_ema_unet_and_every_part(checkpoint_file: Path) -> None:
    checkpoint = _load(checkpoint_file)
    state = checkpoint["state_dict"]
    assert "model_ema.diffusion_modelinput_blocks00weight" in state  # the flattened name from methods.md §2.5
    weights = split_pix2gif_checkpoint(checkpoint)
    assert weights.used_ema and weights.global_step == 23999
    assert set(weights.unet) == set(_tiny_unet())
    torch.testing.assert_close(weights.unet["input_blocks.0.0.weight"],
                               state["model_ema.diffusion_modelinput_blocks00weight"], rtol=0, atol=0)
    torch.testing.assert_close(weights.unet["middle_block.1.proj_in.weight"],
                               state["model_ema.diffusion_modelmiddle_block1proj_inweight"], rtol=0, atol=0)
    for name, tensor in weights.unet.items():
        raw = state[f"model.diffusion_model.{name}"]
        assert 0 < (tensor - raw).abs().max() < 10 * EMA_OFFSET
    assert set(weights.vae) == set(VAE) and set(weights.clip) == set(CLIP)
    assert weights.interval_embedding.shape == (1024, 768)
    assert len(weights.flownet) == 77 and "injection1.norm.weight" in weights.flownet


def test_without_ema_the_raw_unet_is_used(checkpoint_file: Path) -> None:
    checkpoint = _load(checkpoint_file)
    weights = split_pix2gif_checkpoint(checkpoint["state_dict"], use_ema=False)
    assert not weights.used_ema and weights.global_step is None
    for name, tensor in weights.unet.items():
        assert torch.equal(tensor, checkpoint["state_dict"][f"model.diffusion_model.{name}"])


def test_sd15_state_dict_restores_the_ldm_prefixes(checkpoint_file: Path) -> None:
    weights = split_pix2gif_checkpoint(_load(checkpoint_file))
    merged = weights.sd15_state_dict()
    assert set(merged) == ({f"model.diffusion_model.{k}" for k in _tiny_unet()}
                           | {f"first_stage_model.{k}" for k in VAE}
                           | {f"cond_stage_model.transformer.{k}" for k in CLIP})
    assert merged["model.diffusion_model.out.2.weight"] is weights.unet["out.2.weight"]


def test_missing_ema_tensor_is_named(checkpoint_file: Path) -> None:
    state = dict(_load(checkpoint_file)["state_dict"])
    del state["model_ema.diffusion_modelout2weight"]
    with pytest.raises(Pix2GifInputError, match="1 of 4 UNet weights have no EMA copy.*model_ema.diffusion_modelout2weight"):
        split_pix2gif_checkpoint(state, source="my.ckpt")
    state["model_ema.diffusion_modelout2weight"] = torch.zeros(1)
    with pytest.raises(Pix2GifInputError, match="differ in shape"):
        split_pix2gif_checkpoint(state)


def test_plain_sd15_checkpoint_is_recognised() -> None:
    sd15 = {f"model.diffusion_model.{k}": v for k, v in _tiny_unet(in_channels=4).items()}
    sd15.update({f"first_stage_model.{k}": v for k, v in VAE.items()})
    with pytest.raises(Pix2GifInputError) as error:
        split_pix2gif_checkpoint({"state_dict": sd15}, source="v1-5-pruned-emaonly.safetensors")
    message = str(error.value)
    assert message.startswith("v1-5-pruned-emaonly.safetensors: looks like a plain Stable Diffusion 1.5 checkpoint")
    assert "UNet input 4 channels" in message and "12-channel UNet input" in message and "'flownet.*'" in message


def test_other_layouts_are_named() -> None:
    ip2p = {f"model.diffusion_model.{k}": v for k, v in _tiny_unet(in_channels=8).items()}
    with pytest.raises(Pix2GifInputError, match="InstructPix2Pix"):
        split_pix2gif_checkpoint(ip2p)
    incomplete = {f"model.diffusion_model.{k}": v for k, v in _tiny_unet().items()}
    incomplete["interval_embedding.embedding.weight"] = torch.zeros(1024, 768)
    with pytest.raises(Pix2GifInputError, match="incomplete Pix2Gif checkpoint .*no 'flownet.\\*'"):
        split_pix2gif_checkpoint(incomplete)
    with pytest.raises(Pix2GifInputError, match="not an LDM-layout"):
        split_pix2gif_checkpoint({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": torch.zeros(3)})


def test_interval_embedding_shape_is_checked(checkpoint_file: Path) -> None:
    state = dict(_load(checkpoint_file)["state_dict"])
    state["interval_embedding.embedding.weight"] = torch.zeros(512, 768)
    with pytest.raises(Pix2GifInputError, match=r"\(512, 768\), expected \(1024, 768\)"):
        split_pix2gif_checkpoint(state)


def test_build_flownet_and_interval_embedding(checkpoint_file: Path) -> None:
    weights = split_pix2gif_checkpoint(_load(checkpoint_file))
    flownet = build_flownet(weights)
    assert not flownet.training
    for name, tensor in flownet.state_dict().items():
        assert torch.equal(tensor, weights.flownet[name])
    embedding = build_interval_embedding(weights)
    assert torch.equal(embedding(torch.tensor([7]))[0, 0], weights.interval_embedding[7])


def test_flownet_layout_mismatch_is_reported(checkpoint_file: Path) -> None:
    weights = split_pix2gif_checkpoint(_load(checkpoint_file))
    flownet = dict(weights.flownet)
    flownet["conv0.0.weight"] = torch.zeros(64, 4, 5, 5)
    del flownet["predict_flow0.0.bias"]
    flownet["conv3.0.weight"] = torch.zeros(1)
    broken = type(weights)(**{**weights.__dict__, "flownet": flownet})
    with pytest.raises(Pix2GifInputError) as error:
        build_flownet(broken)
    message = str(error.value)
    assert "missing: predict_flow0.0.bias" in message and "unexpected: conv3.0.weight" in message
    assert "conv0.0.weight (64, 4, 5, 5) (expected (64, 4, 3, 3))" in message
