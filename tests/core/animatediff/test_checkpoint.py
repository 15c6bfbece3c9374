"""Reading official-layout motion-module files: every format loads, and every bad file is one clear error."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.checkpoint import load_motion_module_set, normalize_motion_state_dict
from pix2gif_core.animatediff.motion_module import TemporalSelfAttention
from tests.fixtures.motion_checkpoints import (
    TINY_DOWN_CHANNELS,
    TINY_MID_CHANNELS,
    TINY_UP_CHANNELS,
    make_motion_state_dict,
    make_sdxl_like_state_dict,
    write_ckpt,
    write_pickle_with_code,
    write_safetensors,
)

PE_KEY = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
PROJ_IN = "up_blocks.2.motion_modules.1.temporal_transformer.proj_in.weight"


@functools.cache
def official_state(version: str, with_pe: bool = True) -> dict[str, Tensor]:
    return make_motion_state_dict(version, with_pe=with_pe)


def without_pe(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: tensor for key, tensor in state.items() if not key.endswith("pos_encoder.pe")}


FORMATS: dict[str, tuple[str, bool, Callable[[Path, dict[str, Tensor]], None]]] = {
    "ckpt_wrapped_config_prefixed": (".ckpt", True, write_ckpt),
    "ckpt_plain": (
        ".ckpt",
        True,
        lambda path, state: write_ckpt(path, state, wrap_state_dict=False, add_config=False, module_prefix=False),
    ),
    "safetensors_with_pe": (".safetensors", True, write_safetensors),
    "safetensors_without_pe": (".safetensors", False, write_safetensors),
}
# without PE tables and without a mid block a v1 file cannot be told from v3 (documented rule: v3)
DETECTED = {("v1", True): ("v1", 24), ("v1", False): ("v3", 32), ("v2", True): ("v2", 32), ("v2", False): ("v2", 32)}
DETECTED |= {("v3", True): ("v3", 32), ("v3", False): ("v3", 32)}


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
@pytest.mark.parametrize("file_format", list(FORMATS))
def test_official_formats_load_with_detected_layout(tmp_path: Path, version: str, file_format: str) -> None:
    suffix, with_pe, write = FORMATS[file_format]
    state = official_state(version, with_pe)
    path = tmp_path / f"mm_{version}{suffix}"
    write(path, state)
    module_set = load_motion_module_set(str(path))

    config = module_set.config
    assert (config.version, config.pe_length) == DETECTED[(version, with_pe)]
    assert config.down_channels == TINY_DOWN_CHANNELS and config.up_channels == TINY_UP_CHANNELS
    assert (config.modules_per_down_block, config.modules_per_up_block) == (2, 3)
    assert config.mid_channels == (TINY_MID_CHANNELS if version == "v2" else None)
    assert len(module_set.named_motion_modules()) == (21 if version == "v2" else 20)

    loaded = module_set.state_dict()
    expected = without_pe(state)
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key
    attention = next(m for m in module_set.modules() if isinstance(m, TemporalSelfAttention))
    assert attention.pe.device.type == "cpu" and attention.pe.shape == (config.pe_length, TINY_DOWN_CHANNELS[0])


def test_loaded_module_runs_and_mixes_frames(tmp_path: Path) -> None:
    path = tmp_path / "mm.safetensors"
    write_safetensors(path, official_state("v2"))
    module = dict(load_motion_module_set(str(path)).named_motion_modules())["mid_block.motion_modules.0"]
    x = torch.randn(2 * 8, TINY_MID_CHANNELS, 2, 2)
    with torch.no_grad():
        out = module(x, video_length=8)
    assert out.shape == x.shape and torch.isfinite(out).all() and (out - x).abs().max() > 1e-3


def test_zero_proj_out_file_loads_as_identity(tmp_path: Path) -> None:
    path = tmp_path / "mm_init.ckpt"
    write_ckpt(path, make_motion_state_dict("v3", zero_proj_out=True))
    module = load_motion_module_set(str(path)).down_blocks[0].motion_modules[1]
    x = torch.randn(16, TINY_DOWN_CHANNELS[0], 3, 3)
    with torch.no_grad():
        assert torch.equal(module(x, video_length=16), x)


def test_version_override_sets_version_and_default_pe_length(tmp_path: Path) -> None:
    path = tmp_path / "finetune_no_pe.safetensors"
    write_safetensors(path, official_state("v1", with_pe=False))
    config = load_motion_module_set(str(path), version_override="v1").config
    assert (config.version, config.pe_length) == ("v1", 24)
    with pytest.raises(Pix2GifInputError, match="'v9' is unknown"):
        load_motion_module_set(str(path), version_override="v9")


def test_normalize_returns_pe_length_and_plain_keys() -> None:
    state = official_state("v1")
    raw = {"state_dict": {f"module.{key}": tensor for key, tensor in state.items()}, "animatediff_config": {"a": 1}}
    normalized, pe_length = normalize_motion_state_dict(raw, "x.ckpt")
    assert pe_length == 24 and normalized.keys() == without_pe(state).keys()


def test_more_frames_than_v1_position_encoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mm_sd_v15.ckpt"
    write_ckpt(path, official_state("v1"))
    module = load_motion_module_set(str(path)).down_blocks[0].motion_modules[0]
    with pytest.raises(Pix2GifInputError, match=r"25 frames.*at most 24.*v2/v3"):
        module(torch.randn(25, TINY_DOWN_CHANNELS[0], 2, 2), video_length=25)


# ---------------------------------------------------------------- errors: each names the file and the problem
def broken(version: str, edit: Callable[[dict[str, Tensor]], None]) -> dict[str, Tensor]:
    state = dict(official_state(version))
    edit(state)
    return state


def drop_proj_in(state: dict[str, Tensor]) -> None:
    del state[PROJ_IN]


def add_unknown_key(state: dict[str, Tensor]) -> None:
    state["down_blocks.1.motion_modules.0.temporal_transformer.extra.weight"] = torch.zeros(3)


def shrink_proj_in(state: dict[str, Tensor]) -> None:
    state[PROJ_IN] = torch.zeros(64, 32)


def add_lora_keys(state: dict[str, Tensor]) -> None:
    state.clear()
    attention = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
    state[f"{attention}.processor.to_q_lora.down.weight"] = torch.zeros(4, 32)
    state[f"{attention}.processor.to_q_lora.up.weight"] = torch.zeros(32, 4)


def make_sd_checkpoint(state: dict[str, Tensor]) -> None:
    state.clear()
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 4, 3, 3)


BAD_FILES: dict[str, tuple[Callable[[], dict[str, Tensor]], str]] = {
    "missing_key": (lambda: broken("v2", drop_proj_in), rf"1 missing keys \({PROJ_IN}\)"),
    "unexpected_key": (
        lambda: broken("v3", add_unknown_key),
        r"1 unexpected keys \(down_blocks\.1\.motion_modules\.0\.temporal_transformer\.extra\.weight\)",
    ),
    "wrong_shape": (
        lambda: broken("v1", shrink_proj_in),
        rf"1 shape mismatches \({PROJ_IN}: file \(64, 32\) vs expected \(64, 64\)\)",
    ),
    "sdxl_like": (make_sdxl_like_state_dict, r"3 down blocks .*SDXL-family"),
    "motion_lora": (lambda: broken("v2", add_lora_keys), r"is a LoRA .*processor\.to_q_lora"),
    "sd_checkpoint": (lambda: broken("v2", make_sd_checkpoint), r"no AnimateDiff motion-module keys.*Stable Diffusion"),
    "empty": (dict, r"no AnimateDiff motion-module keys.*empty file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_one_clear_error(tmp_path: Path, case: str) -> None:
    make_state, problem = BAD_FILES[case]
    path = tmp_path / f"{case}.safetensors"
    write_safetensors(path, make_state())
    with pytest.raises(Pix2GifInputError, match=problem) as error:
        load_motion_module_set(str(path))
    assert str(path) in str(error.value)


def test_missing_key_list_is_capped_at_five(tmp_path: Path) -> None:
    state = {key: t for key, t in official_state("v3").items() if not key.startswith("up_blocks.3.motion_modules.2.")}
    path = tmp_path / "cut.ckpt"
    write_ckpt(path, state)
    with pytest.raises(Pix2GifInputError, match=r"26 missing keys \((?:[^,]+, ){4}[^,]+ and 21 more\)"):
        load_motion_module_set(str(path))


def test_pickle_carrying_code_is_refused_unrun(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.ckpt"
    write_pickle_with_code(path)
    with pytest.raises(Pix2GifInputError, match=r"evil\.ckpt' contains Python code.*posix\.system.*\.safetensors"):
        load_motion_module_set(str(path))
    assert "pwned" not in capfd.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("mm.gguf", b"GGUF", r"unsupported extension '\.gguf'; supported: \.safetensors, \.ckpt"),
        ("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", r"could not be read .*Download it again"),
        ("garbage.ckpt", b"not a pickle at all", r"could not be read .*Download it again"),
        ("absent.ckpt", None, r"does not exist"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, content: bytes | None, problem: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Pix2GifInputError, match=problem) as error:
        load_motion_module_set(str(path))
    assert name in str(error.value)
