"""Motion Inversion embeddings for AnimateDiff temporal attention (methods.md §4, ported from diffusers UNet3D).

Per selected temporal attention ("layer", named ``<motion module>.attention_blocks.<k>``, e.g.
``down_blocks.2.motion_modules.0.attention_blocks.1``) there are two trained tensors, L = trained frame count:

- query/key embedding ``qk`` (1, L, C), shared by all positions: Q and K read ``hidden + (pe + qk)``, i.e. the
  embedding is folded into AnimateDiff's own position-encoding add (performance.md §5);
- value embedding ``v`` (h·w, L, C), one row per token of the layer's h×w grid: V reads ``hidden + pe + v``,
  broadcast over the videos of the batch (the motion module lays tokens out b-major, n = b·h·w + y·w + x).
  V never sees ``qk`` (the reference feeds V its ``origin_hidden_states``), so V's input is a second add over
  the tokens (``hidden + pe`` when the value embedding is off) — the one cost over plain attention.

Unlike the reference (diffusers UNet3D, no native PE) AnimateDiff adds the sinusoidal PE before Q/K/V, so both
embeddings ride on top of it; and where the reference shares one query/key embedding between a block's two
attentions, each attention has its own here. Inference modes (reference ``inference.py`` ``motion_type``): ``"as_trained"``;
``"camera"`` drops the value embedding; ``"object"`` replaces it by its frame differences
(v'[:, 0] = v[:, 0], v'[:, i] = v[:, i] − v[:, i−1]). A strength s multiplies both embeddings (s = 0 is the
plain attention exactly).

Frame count F ≠ L: embeddings are resampled linearly along frames with ``align_corners=True`` (first and last
frame kept, the motion stretched over the clip; the reference used ``align_corners=False``), before the
``"object"`` differences are taken (as the reference). Token grid ≠ trained grid: the value embedding is
resampled bilinearly over (h, w) (``align_corners=False``, as feature maps are resized) or refused, as chosen.

Files are ``.safetensors`` with keys ``<layer>.qk`` / ``<layer>.v`` and string metadata (:data:`FORMAT_TAG`,
layers, frames, sizes, motion-module version, channel layout as JSON).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from ..animatediff.motion_module import (MotionModule, TemporalAttentionVariant, TemporalSelfAttention,
                                         global_temporal_attention)
from ..atomic_file import atomic_output
from ..errors import Pix2GifInputError

FORMAT_TAG = "pix2gif.motion_embeddings/1"
FORMAT_PREFIX = FORMAT_TAG.split("/")[0] + "/"

Mode = Literal["as_trained", "camera", "object"]
ResolutionPolicy = Literal["interpolate", "refuse"]
MODES: tuple[str, ...] = ("as_trained", "camera", "object")
RESOLUTION_POLICIES: tuple[str, ...] = ("interpolate", "refuse")
ATTENTION_BLOCKS_PER_MODULE = 2
SD15_LEVELS = 4  # UNet resolution levels; level ℓ has the latent grid halved (rounding up) ℓ times

LayerPredicate = Callable[[str, int], bool]
"""Selects motion modules by (module name, channels C)."""


_LAYER_NAME = re.compile(r"^(?P<module>.+\.motion_modules\.\d+)\.attention_blocks\.(?P<block>\d+)$")
_MODULE_LEVEL = re.compile(r"^(?:(?P<direction>down|up)_blocks\.(?P<block>\d+)|mid_block)\.motion_modules\.\d+$")
OFFICIAL_LEVEL = 2
"""The UNet level of Motion Inversion's layers: its config's ``[down,1280]``, ``[up,1280]`` are the temporal
attentions of the reference UNet3D's ``down_blocks.2`` / ``up_blocks.1``, at 1/32 of the image size (the 1/64
blocks, ``down_blocks.3`` / ``up_blocks.0``, have no temporal attention there; methods.md §4.2)."""


def _not_mid(name: str) -> bool:
    return not name.startswith("mid_block.")


def sd15_level(module_name: str) -> int:
    """UNet resolution level ℓ of an SD1.5 motion module (its token grid is the latent's halved ℓ times):
    ``down_blocks.i`` → i, ``up_blocks.i`` → 3 − i, the mid block → 3."""
    match = _MODULE_LEVEL.match(module_name)
    if match is None:
        raise Pix2GifInputError(f"'{module_name}' is not an SD1.5 motion-module name like 'up_blocks.1.motion_modules.0'.")
    block = int(match["block"]) if match["block"] is not None else SD15_LEVELS - 1
    return SD15_LEVELS - 1 - block if match["direction"] == "up" else block


LAYER_PRESETS: dict[str, LayerPredicate] = {
    "official": lambda name, channels: _not_mid(name) and sd15_level(name) == OFFICIAL_LEVEL,
    "1280": lambda name, channels: channels == 1280 and _not_mid(name),
    "640+1280": lambda name, channels: channels in (640, 1280) and _not_mid(name),
    "all": lambda name, channels: True,
}
"""Named selections: Motion Inversion's own (default: ``down_blocks.2`` + ``up_blocks.1``, 1280 channels at 1/32
of the image); every down/up 1280-channel module (adds the 1/64 level; the default before); plus 640; every
module."""
DEFAULT_LAYER_PRESET = "official"


def attention_layer_name(module_name: str, block: int) -> str:
    """``"down_blocks.2.motion_modules.0", 1`` → ``"down_blocks.2.motion_modules.0.attention_blocks.1"``."""
    return f"{module_name}.attention_blocks.{block}"


def split_layer_name(layer_name: str) -> tuple[str, int]:
    """Inverse of :func:`attention_layer_name`: (motion-module name, attention-block index)."""
    match = _LAYER_NAME.match(layer_name)
    if match is None:
        raise Pix2GifInputError(
            f"'{layer_name}' is not a temporal-attention layer name like "
            "'down_blocks.2.motion_modules.0.attention_blocks.1'."
        )
    return match["module"], int(match["block"])


def sd15_token_hw(module_name: str, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Token grid (h, w) the motion module ``module_name`` sees in an SD1.5 UNet for a latent of ``latent_hw``.

    Each level (:func:`sd15_level`) halves the grid, rounding up (stride-2, padding-1 convolutions).
    """
    h, w = latent_hw
    for _ in range(sd15_level(module_name)):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def select_attention_layers(
    module_channels: Mapping[str, int], selection: str | Sequence[str] | LayerPredicate = DEFAULT_LAYER_PRESET
) -> dict[str, int]:
    """Attention-layer name → C for the chosen motion modules, in ``module_channels`` order.

    ``module_channels``: motion-module name → C (e.g. from ``MotionModuleSet.named_motion_modules``).
    ``selection``: a :data:`LAYER_PRESETS` name, a predicate on (module name, C), or explicit module names
    (both attention blocks) and/or attention-layer names.
    """
    all_layers = {
        attention_layer_name(module, block): channels
        for module, channels in module_channels.items()
        for block in range(ATTENTION_BLOCKS_PER_MODULE)
    }
    if isinstance(selection, str):
        if selection not in LAYER_PRESETS:
            raise Pix2GifInputError(
                f"layer preset '{selection}' is unknown; choose one of {', '.join(LAYER_PRESETS)} or list block names."
            )
        selection = LAYER_PRESETS[selection]
    if callable(selection):
        return {name: c for name, c in all_layers.items() if selection(split_layer_name(name)[0], c)}
    wanted = set(selection)
    unknown = sorted(wanted - set(all_layers) - set(module_channels))
    if unknown:
        raise Pix2GifInputError(
            f"layer selection names {', '.join(unknown)}, which this motion module does not have; "
            f"its motion modules are {', '.join(module_channels)}."
        )
    return {name: c for name, c in all_layers.items() if name in wanted or split_layer_name(name)[0] in wanted}


@dataclass(frozen=True)
class LayerSpec:
    """What a new embedding for one attention layer needs: its name, channels C and token grid (h, w)."""

    name: str
    channels: int
    token_hw: tuple[int, int]


def sd15_layer_specs(
    module_channels: Mapping[str, int],
    latent_hw: tuple[int, int],
    selection: str | Sequence[str] | LayerPredicate = DEFAULT_LAYER_PRESET,
) -> list[LayerSpec]:
    """:class:`LayerSpec` of every selected layer (see :func:`select_attention_layers`) for an SD1.5 latent size."""
    return [
        LayerSpec(name, channels, sd15_token_hw(split_layer_name(name)[0], latent_hw))
        for name, channels in select_attention_layers(module_channels, selection).items()
    ]


@dataclass(frozen=True)
class LayerEmbedding:
    """One layer's embeddings: ``qk`` (1, L, C), ``v`` (h·w, L, C) or None, ``token_hw`` = (h, w) trained grid."""

    qk: Tensor
    v: Tensor | None
    token_hw: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_hw", tuple(int(side) for side in self.token_hw))

    @property
    def channels(self) -> int:
        return self.qk.shape[-1]

    def tensors(self) -> list[Tensor]:
        return [self.qk] if self.v is None else [self.qk, self.v]

    def shape_error(self, frames: int) -> str | None:
        """Why the tensors do not fit ``frames`` and ``token_hw`` (None when they do)."""
        if self.qk.dim() != 3 or self.qk.shape[:2] != (1, frames):
            return f"query/key embedding has shape {tuple(self.qk.shape)}, expected (1, {frames}, channels)"
        expected_v = (self.token_hw[0] * self.token_hw[1], frames, self.channels)
        if self.v is not None and tuple(self.v.shape) != expected_v:
            return f"value embedding has shape {tuple(self.v.shape)}, expected {expected_v} (h·w, frames, channels)"
        return None


@dataclass(frozen=True)
class MotionEmbeddings:
    """Embeddings of all selected layers plus what they were trained with.

    ``layers``: layer name → :class:`LayerEmbedding`; ``frames``: L; ``pixel_hw``: (H, W) of the training video
    in pixels; ``motion_module_version``: e.g. ``"v2"``; ``metadata``: free-form strings kept in the file (source
    video, steps, loss …). The channel layout is derived from the tensors.
    """

    layers: dict[str, LayerEmbedding]
    frames: int
    pixel_hw: tuple[int, int]
    motion_module_version: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixel_hw", tuple(int(side) for side in self.pixel_hw))
        if not self.layers:
            raise Pix2GifInputError("motion embeddings have no layers; select at least one temporal attention layer.")
        for name, layer in self.layers.items():
            split_layer_name(name)
            problem = layer.shape_error(self.frames)
            if problem:
                raise Pix2GifInputError(f"motion embedding layer '{name}': {problem}.")

    @classmethod
    def zeros(
        cls,
        layer_specs: Iterable[LayerSpec],
        frames: int,
        pixel_hw: tuple[int, int],
        motion_module_version: str,
        *,
        with_value: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> MotionEmbeddings:
        """Zero-initialised embeddings for training (tensors require grad); ``with_value=False``: qk only."""

        def zero(*shape: int) -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype, requires_grad=True)

        layers = {
            spec.name: LayerEmbedding(
                zero(1, frames, spec.channels),
                zero(spec.token_hw[0] * spec.token_hw[1], frames, spec.channels) if with_value else None,
                spec.token_hw,
            )
            for spec in layer_specs
        }
        return cls(layers, frames, pixel_hw, motion_module_version)

    @property
    def channel_layout(self) -> dict[str, int]:
        """Layer name → C."""
        return {name: layer.channels for name, layer in self.layers.items()}

    def parameters(self) -> list[Tensor]:
        """Every embedding tensor (for an optimizer)."""
        return [tensor for layer in self.layers.values() for tensor in layer.tensors()]

    def mismatch(self, other: MotionEmbeddings) -> str | None:
        """Why ``other`` cannot be added to these embeddings (None when it can)."""
        if other.motion_module_version != self.motion_module_version:
            return f"motion-module version {other.motion_module_version} vs {self.motion_module_version}"
        if set(other.layers) != set(self.layers):
            return f"layers {', '.join(other.layers)} vs {', '.join(self.layers)}"
        if other.channel_layout != self.channel_layout:
            return f"channel layout {other.channel_layout} vs {self.channel_layout}"
        if other.frames != self.frames:
            return f"{other.frames} trained frames vs {self.frames}"
        for name, layer in self.layers.items():
            theirs = other.layers[name]
            if theirs.token_hw != layer.token_hw:
                return f"layer '{name}' token grid {theirs.token_hw} vs {layer.token_hw} (trained at another size)"
            if (theirs.v is None) != (layer.v is None):
                return f"layer '{name}' value embedding {'absent' if theirs.v is None else 'present'} in one only"
        return None


def combine(terms: Sequence[tuple[float, MotionEmbeddings]]) -> MotionEmbeddings:
    """Weighted sum ``a1·E1 + a2·E2 + …`` of compatible embeddings (same layers, shapes, version, layout).

    The result is detached (no grad) and carries the first input's metadata.
    """
    if not terms:
        raise Pix2GifInputError("combine needs at least one (weight, motion embeddings) pair.")
    first = terms[0][1]
    for index, (weight, embeddings) in enumerate(terms, start=1):
        if not math.isfinite(weight):
            raise Pix2GifInputError(f"weight of motion embeddings input {index} must be finite (got {weight}).")
        problem = first.mismatch(embeddings)
        if problem:
            raise Pix2GifInputError(
                f"motion embeddings input {index} cannot be combined with input 1: {problem}. "
                "Only embeddings trained on the same motion module, layers, frame count and size can be added."
            )

    def weighted_sum(name: str, pick: Callable[[LayerEmbedding], Tensor]) -> Tensor:
        total = sum(weight * pick(e.layers[name]).detach() for weight, e in terms)
        return total.to(pick(first.layers[name]).dtype)

    layers = {
        name: LayerEmbedding(
            weighted_sum(name, lambda layer: layer.qk),
            None if first_layer.v is None else weighted_sum(name, lambda layer: layer.v),
            first_layer.token_hw,
        )
        for name, first_layer in first.layers.items()
    }
    return MotionEmbeddings(layers, first.frames, first.pixel_hw, first.motion_module_version, dict(first.metadata))


def _layout_error(embeddings: MotionEmbeddings, channels_by_layer: Mapping[str, int]) -> str | None:
    for name, channels in embeddings.channel_layout.items():
        module = split_layer_name(name)[0]
        available = channels_by_layer.get(name, channels_by_layer.get(module))
        if available is None:
            return f"layer '{name}' does not exist in this motion module (embeddings from another layout)"
        if available != channels:
            return f"layer '{name}' has {channels} channels in the embeddings but {available} in the motion module"
    return None


def compatibility_error(
    embeddings: MotionEmbeddings, motion_module_version: str, channels_by_layer: Mapping[str, int]
) -> str | None:
    """Why ``embeddings`` cannot drive this motion module (None when they can).

    ``channels_by_layer``: C keyed by attention-layer name or by motion-module name.
    """
    if embeddings.motion_module_version != motion_module_version:
        return (
            f"the motion embeddings were trained on a {embeddings.motion_module_version} motion module, "
            f"this one is {motion_module_version}; load the motion module they were trained with"
        )
    return _layout_error(embeddings, channels_by_layer)


# ---------------------------------------------------------------------------------------------------------------
# Resampling


def resample_frames(embedding: Tensor, frames: int) -> Tensor:
    """(N, L, C) → (N, frames, C), linear along frames with ``align_corners=True`` (identity when L = frames)."""
    if embedding.shape[1] == frames:
        return embedding
    stretched = F.interpolate(embedding.transpose(1, 2), size=frames, mode="linear", align_corners=True)
    return stretched.transpose(1, 2)


def resample_tokens(embedding: Tensor, token_hw: tuple[int, int], target_hw: tuple[int, int]) -> Tensor:
    """(h·w, L, C) → (h'·w', L, C), bilinear over the row-major token grid, ``align_corners=False``."""
    if tuple(token_hw) == tuple(target_hw):
        return embedding
    (h, w), (th, tw) = token_hw, target_hw
    _, frames, channels = embedding.shape
    grid = embedding.reshape(h, w, frames * channels).permute(2, 0, 1)[None]
    resized = F.interpolate(grid, size=(th, tw), mode="bilinear", align_corners=False)
    return resized[0].permute(1, 2, 0).reshape(th * tw, frames, channels)


def frame_differences(embedding: Tensor) -> Tensor:
    """"object" mode: (N, F, C) → first frame kept, then e[:, i] − e[:, i−1]."""
    return torch.cat([embedding[:, :1], embedding.diff(dim=1)], dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Attention variant


def _update_count(tensor: Tensor) -> int | None:
    """Autograd's in-place update counter; inference tensors (loaded under ``torch.inference_mode``) have none."""
    return None if tensor.is_inference() else tensor._version


@dataclass(frozen=True)
class ApplyOptions:
    """How embeddings act at inference: ``mode`` (:data:`MODES`), ``strength`` s (× both embeddings; 0 = plain
    attention) and ``resolution_policy`` for a token grid other than the trained one (:data:`RESOLUTION_POLICIES`)."""

    mode: Mode = "as_trained"
    strength: float = 1.0
    resolution_policy: ResolutionPolicy = "interpolate"

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("motion embedding mode", self.mode, MODES),
            ("resolution policy", self.resolution_policy, RESOLUTION_POLICIES),
        ):
            if value not in choices:
                raise Pix2GifInputError(f"{name} '{value}' is unknown; choose one of {', '.join(choices)}.")
        if not math.isfinite(self.strength):
            raise Pix2GifInputError(f"motion embedding strength must be finite (got {self.strength}).")


class MotionEmbeddingAttention:
    """:class:`TemporalAttentionVariant` for one attention layer with its motion embeddings.

    ``token_hw``: the (h, w) token grid of this layer in the current generation. Construction only validates;
    the resampled, scaled, cast embeddings are computed on the first call and cached per (frames, dtype, device)
    while the embedding tensors are unchanged (recomputed every call when autograd tracks them, i.e. training, and
    inside ``torch.compile``, where they become part of the graph). Attends through ``attn.attend``, i.e. with
    the motion module's attention kernel (the host's, when a node applied the motion model) and key scale.
    """

    def __init__(
        self,
        layer: LayerEmbedding,
        token_hw: tuple[int, int],
        options: ApplyOptions = ApplyOptions(),
        layer_name: str = "motion embedding layer",
    ) -> None:
        self.layer = layer
        self.token_hw = tuple(token_hw)
        self.mode = options.mode
        self.strength = float(options.strength)
        self.value = None if options.mode == "camera" else layer.v
        if self.value is not None and self.token_hw != layer.token_hw and options.resolution_policy == "refuse":
            (h, w), (th, tw) = layer.token_hw, self.token_hw
            raise Pix2GifInputError(
                f"motion embeddings of layer '{layer_name}' were trained on a {h}×{w} token grid but this "
                f"generation has {th}×{tw} there; generate at the training size, use mode 'camera', or set "
                "the resolution policy to 'interpolate'."
            )
        self._cache_key: tuple | None = None
        self._cache: tuple[Tensor, Tensor | None] | None = None

    def prepared(self, frames: int, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """(qk (F, C), value offset ``v − qk`` (h·w, F, C) or None) for F frames: resampled, mode applied,
        × strength, in ``like``'s dtype/device."""
        if torch.compiler.is_compiling():  # part of the compiled graph: no Python-side cache to guard on
            return self._computed(frames, like)
        tensors = [self.layer.qk] if self.value is None else [self.layer.qk, self.value]
        tracked = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        key = (frames, like.dtype, like.device, *(_update_count(t) for t in tensors))
        if not tracked and key == self._cache_key and self._cache is not None:
            return self._cache
        result = self._computed(frames, like)
        if not tracked:
            self._cache_key, self._cache = key, result
        return result

    def _computed(self, frames: int, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """What :meth:`prepared` returns, computed afresh."""
        qk = resample_frames(self.layer.qk, frames)[0] * self.strength
        offset = None
        if self.value is not None:
            value = resample_frames(resample_tokens(self.value, self.layer.token_hw, self.token_hw), frames)
            offset = (frame_differences(value) if self.mode == "object" else value) * self.strength - qk
        return qk.to(like), None if offset is None else offset.to(like)

    def __call__(self, attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        """``hidden`` (N, F, C) with N = b·h·w (b-major), ``pe`` (F, C) → attended values (N, F, C) before to_out.

        Q, K read ``tokens = hidden + (pe + qk)``. V reads ``hidden + pe + v`` — never the query/key embedding,
        as the reference's ``origin_hidden_states`` — computed as ``tokens + (v − qk)`` with the cached offset (one
        add per call; exact when the embeddings are zero), or ``hidden + pe`` when the value embedding is off.
        """
        qk, value_offset = self.prepared(hidden.shape[1], hidden)
        tokens = hidden + (pe + qk)
        if value_offset is None:
            value_tokens = hidden + pe
        else:
            positions = value_offset.shape[0]
            if hidden.shape[0] % positions:
                raise ValueError(
                    f"temporal attention got {hidden.shape[0]} token sequences, not a multiple of the "
                    f"{self.token_hw[0]}×{self.token_hw[1]} grid given to its motion embeddings"
                )
            value_tokens = (tokens.unflatten(0, (-1, positions)) + value_offset).flatten(0, 1)
        return attn.attend(attn.to_q(tokens), attn.to_k(tokens), attn.to_v(value_tokens))


class MotionModuleEmbeddingVariant:
    """The variant for one motion module: each attention block with embeddings uses its
    :class:`MotionEmbeddingAttention`, the others plain global attention (the module passes one variant to both)."""

    def __init__(self, by_attention: Mapping[TemporalSelfAttention, MotionEmbeddingAttention]) -> None:
        self.by_attention = dict(by_attention)

    def __call__(self, attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        return self.by_attention.get(attn, global_temporal_attention)(attn, hidden, pe)


class MotionEmbeddingPatch:
    """Applies :class:`MotionEmbeddings` to a set of SD1.5 motion modules.

    ``motion_modules``: motion-module name → module. :meth:`variants` gives the per-module variants for a latent
    size (cached per size, so the glue can call it before every UNet call).
    """

    def __init__(
        self,
        embeddings: MotionEmbeddings,
        motion_modules: Mapping[str, MotionModule],
        options: ApplyOptions = ApplyOptions(),
    ) -> None:
        problem = _layout_error(embeddings, {name: module.channels for name, module in motion_modules.items()})
        if problem:
            raise Pix2GifInputError(f"motion embeddings do not fit this motion module: {problem}.")
        self.embeddings = embeddings
        self.motion_modules = dict(motion_modules)
        self.options = options
        self._by_latent_hw: dict[tuple[int, int], dict[str, TemporalAttentionVariant]] = {}

    def variants(self, latent_hw: tuple[int, int]) -> dict[str, TemporalAttentionVariant]:
        """Motion-module name → variant for a latent of ``latent_hw`` (only modules that have embeddings)."""
        latent_hw = tuple(latent_hw)
        if latent_hw not in self._by_latent_hw:
            grouped: dict[str, dict[TemporalSelfAttention, MotionEmbeddingAttention]] = {}
            for name, layer in self.embeddings.layers.items():
                module_name, block = split_layer_name(name)
                attention = self.motion_modules[module_name].temporal_transformer.transformer_blocks[0]
                grouped.setdefault(module_name, {})[attention.attention_blocks[block]] = MotionEmbeddingAttention(
                    layer, sd15_token_hw(module_name, latent_hw), self.options, name
                )
            self._by_latent_hw[latent_hw] = {
                module_name: MotionModuleEmbeddingVariant(by_attention) for module_name, by_attention in grouped.items()
            }
        return self._by_latent_hw[latent_hw]


# ---------------------------------------------------------------------------------------------------------------
# File format


def save_motion_embeddings(embeddings: MotionEmbeddings, path: str | os.PathLike) -> None:
    """Write ``embeddings`` as ``.safetensors`` (keys ``<layer>.qk``/``<layer>.v``, metadata as strings).

    Written to a temporary file beside ``path`` and renamed; a failed write (e.g. a full disk) removes it and raises
    one :class:`Pix2GifInputError` naming the file, so a failed save never leaves a half-written file."""
    tensors = {}
    for name, layer in embeddings.layers.items():
        tensors[f"{name}.qk"] = layer.qk.detach().cpu().contiguous()
        if layer.v is not None:
            tensors[f"{name}.v"] = layer.v.detach().cpu().contiguous()
    broken = _non_finite(tensors)
    if broken:
        raise Pix2GifInputError(f"motion embeddings to save: {broken} hold NaN or infinite values (training diverged"
                                "? lower the learning rate); nothing was written.")
    metadata = {
        **embeddings.metadata,
        "format": FORMAT_TAG,
        "layers": json.dumps(list(embeddings.layers)),
        "frames": str(embeddings.frames),
        "pixel_hw": json.dumps(list(embeddings.pixel_hw)),
        "token_hw": json.dumps({name: list(layer.token_hw) for name, layer in embeddings.layers.items()}),
        "motion_module_version": embeddings.motion_module_version,
        "channels": json.dumps(embeddings.channel_layout),
    }
    with atomic_output(Path(path)) as handle:
        handle.write(save(tensors, metadata=metadata))


def _non_finite(tensors: Mapping[str, Tensor]) -> str:
    """The names (up to three, comma-separated) of tensors holding NaN or infinite values; '' when none do."""
    names = [name for name, tensor in tensors.items()
             if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


_RESERVED_METADATA = ("format", "layers", "frames", "pixel_hw", "token_hw", "motion_module_version", "channels")


def load_motion_embeddings(path: str | os.PathLike, device: torch.device | str = "cpu") -> MotionEmbeddings:
    """Read a file written by :func:`save_motion_embeddings`; anything else raises naming the file."""
    where = f"motion embedding file '{os.fspath(path)}'"
    try:
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (OSError, SafetensorError) as err:
        raise Pix2GifInputError(f"{where} cannot be read as .safetensors ({err}); pick a saved motion embedding.") from err
    tag = metadata.get("format", "")
    broken = _non_finite(tensors)
    if broken and tag.startswith(FORMAT_PREFIX):
        raise Pix2GifInputError(f"{where}: {broken} hold NaN or infinite values; it cannot steer motion – train or "
                                "save the embeddings again.")
    if not tag.startswith(FORMAT_PREFIX):
        sample = ", ".join(sorted(tensors)[:2]) or "none"
        raise Pix2GifInputError(
            f"{where} is not a motion embedding (no '{FORMAT_TAG}' format tag; keys like {sample}). "
            "Motion-module checkpoints and LoRAs go into their own loaders."
        )
    if tag != FORMAT_TAG:
        raise Pix2GifInputError(f"{where} has format '{tag}', this version reads '{FORMAT_TAG}'; update the pack.")
    try:
        names = json.loads(metadata["layers"])
        token_hw = json.loads(metadata["token_hw"])
        layers = {
            name: LayerEmbedding(tensors[f"{name}.qk"], tensors.get(f"{name}.v"), token_hw[name]) for name in names
        }
        foreign = sorted(set(tensors) - {f"{name}.{kind}" for name in names for kind in ("qk", "v")})
        if foreign:
            raise Pix2GifInputError(f"keys {', '.join(foreign[:3])} belong to no layer in its layer list")
        embeddings = MotionEmbeddings(
            layers,
            int(metadata["frames"]),
            json.loads(metadata["pixel_hw"]),
            metadata["motion_module_version"],
            {key: value for key, value in metadata.items() if key not in _RESERVED_METADATA},
        )
        if embeddings.channel_layout != json.loads(metadata["channels"]):
            raise Pix2GifInputError("its tensors disagree with its stored channel layout")
    except Pix2GifInputError as err:
        raise Pix2GifInputError(f"{where}: {str(err).rstrip('.')}; save the embeddings again.") from err
    except (KeyError, ValueError, TypeError) as err:
        raise Pix2GifInputError(f"{where} is damaged (missing or bad {err}); save the embeddings again.") from err
    return embeddings
