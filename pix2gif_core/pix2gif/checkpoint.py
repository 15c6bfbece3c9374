"""Key mapping of the Pix2Gif PyTorch-Lightning checkpoint (methods.md §2.5) into its parts.

Layout: ``model.diffusion_model.*`` UNet (conv_in 12 channels = noisy | source | warped source latents),
``model_ema.<flattened name>`` its EMA copy (LitEma drops the dots: ``model.diffusion_model.input_blocks.0.0.weight``
→ ``model_ema.diffusion_modelinput_blocks00weight``; plus ``model_ema.decay`` / ``model_ema.num_updates``),
``first_stage_model.*`` VAE, ``cond_stage_model.transformer.*`` CLIP-L, ``interval_embedding.embedding.weight``
(1024, 768), ``flownet.*``; DDPM schedule buffers and ``logvar`` are ignored. The official inference uses the EMA
UNet (FlowNet and interval embedding have no EMA).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import Pix2GifInputError
from .flownet import CONTEXT_DIM, INTERVAL_VOCABULARY, FlowNet, IntervalEmbedding

UNET_PREFIX = "model.diffusion_model."
EMA_UNET_PREFIX = "model_ema.diffusion_model"
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
FLOWNET_PREFIX = "flownet."
INTERVAL_KEY = "interval_embedding.embedding.weight"
UNET_INPUT_KEY = "input_blocks.0.0.weight"
PIX2GIF_UNET_IN_CHANNELS = 12
_SHOWN = 5
_Module = TypeVar("_Module", bound=nn.Module)


def ema_key(unet_name: str) -> str:
    """LitEma's flattened key for UNet parameter ``unet_name`` (relative to ``model.diffusion_model.``)."""
    return EMA_UNET_PREFIX + unet_name.replace(".", "")


@dataclass(frozen=True)
class Pix2GifWeights:
    """The parts of a Pix2Gif checkpoint, each keyed relative to its prefix.

    ``unet``: EMA weights when ``used_ema`` (else the raw ones) under ``model.diffusion_model.`` names;
    ``vae`` under ``first_stage_model.``; ``clip`` under ``cond_stage_model.transformer.``;
    ``interval_embedding``: (1024, 768); ``flownet`` under ``flownet.``; ``global_step`` when the file had one.
    """

    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    clip: dict[str, torch.Tensor]
    interval_embedding: torch.Tensor
    flownet: dict[str, torch.Tensor]
    used_ema: bool
    global_step: int | None

    def sd15_state_dict(self) -> dict[str, torch.Tensor]:
        """UNet (as chosen), VAE and CLIP re-prefixed in the LDM SD1.5 layout that SD1.5 loaders read."""
        parts = ((UNET_PREFIX, self.unet), (VAE_PREFIX, self.vae), (CLIP_PREFIX, self.clip))
        return {prefix + name: tensor for prefix, part in parts for name, tensor in part.items()}


def split_pix2gif_checkpoint(
    checkpoint: Mapping[str, Any], *, use_ema: bool = True, source: str = "Pix2Gif checkpoint"
) -> Pix2GifWeights:
    """Split a Lightning checkpoint (``{"state_dict": ..., "global_step": ...}``) or a bare state dict.

    ``use_ema``: take every UNet weight from ``model_ema.*`` (the official inference setting); a missing EMA
    tensor is an error. ``use_ema=False`` takes ``model.diffusion_model.*`` as stored (e.g. an EMA-only export).
    ``source`` names the file in error messages.
    """
    inner = checkpoint.get("state_dict")
    state = inner if isinstance(inner, Mapping) else checkpoint
    step = checkpoint.get("global_step")
    unet = _with_prefix(state, UNET_PREFIX)
    flownet = _with_prefix(state, FLOWNET_PREFIX)
    _check_is_pix2gif(state, unet, flownet, source)
    interval = state[INTERVAL_KEY]
    if tuple(interval.shape) != (INTERVAL_VOCABULARY, CONTEXT_DIM):
        raise Pix2GifInputError(
            f"{source}: '{INTERVAL_KEY}' has shape {tuple(interval.shape)}, expected"
            f" ({INTERVAL_VOCABULARY}, {CONTEXT_DIM})."
        )
    return Pix2GifWeights(
        unet=_ema_unet(state, unet, source) if use_ema else unet,
        vae=_with_prefix(state, VAE_PREFIX),
        clip=_with_prefix(state, CLIP_PREFIX),
        interval_embedding=interval,
        flownet=flownet,
        used_ema=use_ema,
        global_step=int(step) if step is not None else None,
    )


def build_flownet(weights: Pix2GifWeights) -> FlowNet:
    """A FlowNet in eval mode holding ``weights.flownet``; keys and shapes must match exactly."""
    return _load_exact(FlowNet(), weights.flownet, "FlowNet ('flownet.*')")


def build_interval_embedding(weights: Pix2GifWeights) -> IntervalEmbedding:
    """An IntervalEmbedding in eval mode holding ``weights.interval_embedding``."""
    return _load_exact(IntervalEmbedding(), {"embedding.weight": weights.interval_embedding}, "interval embedding")


def _with_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _check_is_pix2gif(state: Mapping[str, Any], unet: dict[str, torch.Tensor], flownet: dict[str, torch.Tensor],
                      source: str) -> None:
    """Name what the file is when it is not a Pix2Gif checkpoint."""
    expected = (
        "the Pix2Gif training checkpoint: a 12-channel UNet input (noisy | source | warped source latents),"
        f" 'flownet.*' and '{INTERVAL_KEY}'"
    )
    if UNET_INPUT_KEY not in unet:
        sample = ", ".join(list(state)[:3]) or "no keys"
        raise Pix2GifInputError(
            f"{source}: no '{UNET_PREFIX}{UNET_INPUT_KEY}' key (first keys: {sample}); this is not an LDM-layout"
            f" Stable Diffusion checkpoint. Expected {expected}."
        )
    in_channels = unet[UNET_INPUT_KEY].shape[1]
    missing = [name for name, present in (("'flownet.*'", bool(flownet)), (f"'{INTERVAL_KEY}'", INTERVAL_KEY in state))
               if not present]
    if in_channels == PIX2GIF_UNET_IN_CHANNELS and not missing:
        return
    kind = {4: "a plain Stable Diffusion 1.5 checkpoint", 8: "an InstructPix2Pix checkpoint",
            9: "an inpainting checkpoint", PIX2GIF_UNET_IN_CHANNELS: "an incomplete Pix2Gif checkpoint"}.get(in_channels, "an unknown Stable Diffusion variant")
    found = f"UNet input {in_channels} channels" + (f", no {' and no '.join(missing)}" if missing else "")
    advice = " Load it with ComfyUI's checkpoint loader instead." if in_channels in (4, 8, 9) and missing else ""
    raise Pix2GifInputError(f"{source}: looks like {kind} ({found}). The Pix2Gif loader needs {expected}.{advice}")


def _ema_unet(state: Mapping[str, Any], unet: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Map every UNet weight onto its EMA tensor; name the first missing or mis-shaped ones."""
    missing = [name for name in unet if ema_key(name) not in state]
    if missing:
        shown = ", ".join(ema_key(name) for name in missing[:_SHOWN])
        raise Pix2GifInputError(
            f"{source}: {len(missing)} of {len(unet)} UNet weights have no EMA copy (e.g. {shown}). Official Pix2Gif"
            " inference uses the EMA UNet; if this file stores EMA weights directly under 'model.diffusion_model.',"
            " load it with EMA turned off."
        )
    mismatched = [name for name in unet if state[ema_key(name)].shape != unet[name].shape]
    if mismatched:
        shown = ", ".join(f"{name} {tuple(state[ema_key(name)].shape)} vs {tuple(unet[name].shape)}"
                          for name in mismatched[:_SHOWN])
        raise Pix2GifInputError(f"{source}: EMA and UNet weights differ in shape: {shown}. The file is corrupt or mixed.")
    return {name: state[ema_key(name)] for name in unet}


def _load_exact(module: _Module, state: dict[str, torch.Tensor], what: str) -> _Module:
    """Load ``state`` into ``module`` after checking keys and shapes; return it in eval mode."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    problems = [f"{label}: {', '.join(items[:_SHOWN])}{' …' if len(items) > _SHOWN else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
                if items]
    if problems:
        raise Pix2GifInputError(
            f"{what}: the checkpoint does not match the official Pix2Gif layout ({'; '.join(problems)})."
        )
    module.load_state_dict(state)
    return module.eval()
