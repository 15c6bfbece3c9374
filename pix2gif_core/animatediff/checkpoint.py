"""Reading AnimateDiff motion-module checkpoints (official ``.ckpt`` and ``.safetensors`` layouts).

``load_motion_module_set(path)`` = read → normalise (unwrap ``state_dict``, drop non-tensors and the
``module.`` prefix, drop ``pos_encoder.pe`` tables but keep their length) → detect the layout and version from
the keys → build a :class:`MotionModuleSet` → strict key and shape check with our own error → load.

Version detection (methods.md §1.2): a mid-block module ⇒ v2; otherwise a PE table of 32 rows, or none at all
(files saved without the non-persistent ``pe``), ⇒ v3; any other PE length (24 for mm_sd_v14/v15, or a
long-video finetune) ⇒ v1, the PE length kept as read. ``version_override`` fixes a wrong guess (e.g. a v1
finetune saved without PE tables); the version only labels behaviour (v1 = cross-frame GroupNorm in the
host), the module structure always follows the keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import Pix2GifInputError
from ..weights_file import read_state_dict_file
from .motion_module import DEFAULT_PE_LENGTH, MotionModuleConfig, MotionModuleSet, check_version

SD15_DOWN_BLOCKS, SD15_UP_BLOCKS = 4, 4
SD15_MODULES_PER_DOWN_BLOCK, SD15_MODULES_PER_UP_BLOCK = 2, 3
SUGGESTED_FILES = "an SD1.5 AnimateDiff motion module such as mm_sd_v15_v2.ckpt or v3_sd15_mm.ckpt"
_LISTED_PER_KIND = 5

_NORM_WEIGHT_KEY = re.compile(
    r"^(?:(down|up)_blocks\.(\d+)|mid_block)\.motion_modules\.(\d+)\.temporal_transformer\.norm\.weight$"
)
_PE_SUFFIX = "pos_encoder.pe"
_MODULE_PREFIX = "module."


def normalize_motion_state_dict(raw: Mapping[str, Any], source: str) -> tuple[dict[str, Tensor], int | None]:
    """Tensors keyed as in the official layout, and the PE length the file's ``pos_encoder.pe`` tables carry.

    Unwraps ``{"state_dict": …}``, drops non-tensor entries (``animatediff_config``, step counters), strips a
    ``module.`` prefix and removes ``…pos_encoder.pe`` tables (shape (1, L, C)); returns L, or None without them.
    """
    inner = raw.get("state_dict")
    entries = inner if isinstance(inner, Mapping) else raw
    state: dict[str, Tensor] = {}
    pe_lengths: set[int] = set()
    for key, value in entries.items():
        if not isinstance(value, Tensor):
            continue
        key = key.removeprefix(_MODULE_PREFIX)
        if key.endswith(_PE_SUFFIX):
            pe_lengths.add(value.shape[-2])
        else:
            state[key] = value
    if len(pe_lengths) > 1:
        raise Pix2GifInputError(
            f"Motion module file '{source}' has position-encoding tables of different lengths "
            f"{sorted(pe_lengths)}; the file is inconsistent. Download it again."
        )
    return state, next(iter(pe_lengths), None)


def detect_config(
    state: Mapping[str, Tensor], pe_length: int | None, source: str, version_override: str | None = None
) -> MotionModuleConfig:
    """Layout and version of a normalised motion-module state dict (see the module docstring for the rules).

    Channels come from the ``…temporal_transformer.norm.weight`` shapes, block and module counts from the keys.
    ``version_override`` replaces the detected version; without PE tables the PE length is then its default.
    Raises :class:`Pix2GifInputError` naming ``source`` for LoRA files, files without motion modules and
    layouts that do not fit SD1.5 (e.g. SDXL-family modules with 3 down blocks).
    """
    lora_key = next((key for key in state if "_lora." in key), None)
    if lora_key is not None:
        raise Pix2GifInputError(
            f"File '{source}' is a LoRA (MotionLoRA or v3 domain adapter, keys like '{lora_key}'), not a motion "
            f"module; load {SUGGESTED_FILES}."
        )
    if not any(".motion_modules." in key for key in state):
        raise Pix2GifInputError(
            f"File '{source}' contains no AnimateDiff motion-module keys ('….motion_modules.…'); it looks like "
            f"{_describe_foreign_file(list(state))}. Load {SUGGESTED_FILES}."
        )
    blocks: dict[str, dict[int, dict[int, int]]] = {"down": {}, "up": {}, "mid": {}}
    for key, tensor in state.items():
        match = _NORM_WEIGHT_KEY.match(key)
        if match:
            direction, block, index = match.group(1) or "mid", int(match.group(2) or 0), int(match.group(3))
            blocks[direction].setdefault(block, {})[index] = tensor.shape[0]
    down_channels, modules_per_down = _block_layout(blocks["down"], "down", source)
    up_channels, modules_per_up = _block_layout(blocks["up"], "up", source)
    layout = (len(down_channels), modules_per_down, len(up_channels), modules_per_up)
    if layout != (SD15_DOWN_BLOCKS, SD15_MODULES_PER_DOWN_BLOCK, SD15_UP_BLOCKS, SD15_MODULES_PER_UP_BLOCK):
        sdxl = len(down_channels) == 3
        family = "an SDXL-family motion module (AnimateDiff-SDXL / HotshotXL)" if sdxl else "not the SD1.5 layout"
        raise Pix2GifInputError(
            f"Motion module file '{source}' has {len(down_channels)} down blocks × {modules_per_down} modules with "
            f"channels {down_channels} and {len(up_channels)} up blocks × {modules_per_up}: {family}. This pack "
            f"runs SD1.5 (4 down blocks × 2, 4 up blocks × 3); load {SUGGESTED_FILES}."
        )
    mid_channels = blocks["mid"].get(0, {}).get(0)
    detected = "v2" if mid_channels is not None else "v3" if pe_length in (None, 32) else "v1"
    version = check_version(version_override) if version_override is not None else detected
    return MotionModuleConfig(
        version=version,
        down_channels=down_channels,
        modules_per_down_block=modules_per_down,
        up_channels=up_channels,
        modules_per_up_block=modules_per_up,
        mid_channels=mid_channels,
        pe_length=pe_length or DEFAULT_PE_LENGTH[version],
    )


def _block_layout(blocks: Mapping[int, Mapping[int, int]], direction: str, source: str) -> tuple[tuple[int, ...], int]:
    """Channels per block (from its first module) and modules per block (highest index + 1)."""
    count = max(blocks, default=-1) + 1
    absent = [index for index in range(count) if index not in blocks]
    if count == 0 or absent:
        raise Pix2GifInputError(
            f"Motion module file '{source}' has no '{direction}_blocks.<i>.motion_modules.<j>.temporal_transformer."
            f"norm.weight' for block(s) {absent or [0]}; the file is incomplete. Download it again."
        )
    channels = tuple(blocks[index][min(blocks[index])] for index in range(count))
    return channels, max(max(modules) for modules in blocks.values()) + 1


def _describe_foreign_file(keys: list[str]) -> str:
    if not keys:
        return "an empty file (no tensors)"
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return "a Stable Diffusion checkpoint"
    if any(".temporal_attentions." in key for key in keys):
        return "HotshotXL temporal layers (SDXL), which this SD1.5 pack does not run"
    return f"something else (keys like {', '.join(keys[:3])})"


def load_motion_module_set(path: str, version_override: str | None = None) -> MotionModuleSet:
    """The motion modules of the file at ``path`` (eval mode), weights in the file's dtype on the CPU.

    ``version_override`` ("v1" | "v2" | "v3"): see :func:`detect_config`. Mismatching keys or shapes raise
    :class:`Pix2GifInputError` listing them.
    """
    state, pe_length = normalize_motion_state_dict(read_state_dict_file(path), path)
    return build_motion_module_set(state, pe_length, path, version_override)


def build_motion_module_set(state: Mapping[str, Tensor], pe_length: int | None, source: str,
                            version_override: str | None = None) -> MotionModuleSet:
    """The motion modules of a normalised state dict (:func:`normalize_motion_state_dict`), eval mode, holding
    ``state``'s tensors; layout from :func:`detect_config`, every key and shape checked (errors name ``source``)."""
    config = detect_config(state, pe_length, source, version_override)
    with torch.device("meta"):
        module_set = MotionModuleSet(config)
    _check_keys_and_shapes(module_set, state, source)
    module_set.load_state_dict(state, strict=True, assign=True)
    module_set.reset_position_encodings()
    return module_set.eval()


def _check_keys_and_shapes(module_set: MotionModuleSet, state: Mapping[str, Tensor], source: str) -> None:
    expected = {key: tuple(tensor.shape) for key, tensor in module_set.state_dict().items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs expected {shape}"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    kinds = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
    problems = [f"{len(items)} {kind} ({_first(items)})" for kind, items in kinds.items() if items]
    if problems:
        raise Pix2GifInputError(
            f"Motion module file '{source}' does not match the {module_set.config.version} layout its keys describe: "
            f"{'; '.join(problems)}. The file is damaged or not {SUGGESTED_FILES}."
        )


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED_PER_KIND])
    return shown if len(items) <= _LISTED_PER_KIND else f"{shown} and {len(items) - _LISTED_PER_KIND} more"
