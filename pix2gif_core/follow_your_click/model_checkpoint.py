"""Reading a Follow-Your-Click checkpoint (methods.md §5.5): the official layout, what it is not, and its parts.

Layout: a diffusers-named state dict of the whole UNet or a subset of it – at least ``conv_in`` with 9 input
channels (noisy latent | mask | first-frame latent), AnimateDiff v1-style motion modules
(``down_blocks.<i>.motion_modules.<j>.*``, ``up_blocks.…``; 24 positions, no mid-block module),
``fps_embedding.linear_{1,2}.*`` and ``motion_embedding.linear_{1,2}.*`` – optionally inside ``{"state_dict": …}``
and with a ``module.`` prefix (the official loader strips both and asserts that no key is left unused). Every other
UNet weight it carries replaces the base SD1.5 model's. The file was never published (Follow-Your-Click issue
#18); what a user is likelier to pick by mistake – an SD1.5 checkpoint, an AnimateDiff module, a diffusers SD1.5
UNet, a fine-tune with a v2 motion module merged on top – is named in the error.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..animatediff.checkpoint import build_motion_module_set, normalize_motion_state_dict
from ..animatediff.motion_module import DEFAULT_PE_LENGTH, MotionModuleSet
from ..diffusion.diffusers_unet_names import ldm_unet_name
from ..diffusion.ldm_layout import UNetLayout
from ..errors import Pix2GifInputError
from ..weights_file import read_state_dict_file

IN_CHANNELS = 9
PE_LENGTH = DEFAULT_PE_LENGTH["v1"]
SCALAR_EMBEDDINGS = ("fps_embedding", "motion_embedding")
SCALAR_EMBEDDING_KEYS = ("linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias")
CONV_IN_KEY = "conv_in.weight"
_MOTION_KEY = ".motion_modules."
_LDM_PREFIX = "model.diffusion_model."
_SHOWN = 5
EXPECTED = ("the Follow-Your-Click UNet checkpoint (diffusers names: conv_in with 9 input channels, v1-style "
            "'motion_modules', 'fps_embedding.*', 'motion_embedding.*')")


@dataclass(frozen=True)
class FollowYourClickWeights:
    """The parts of a Follow-Your-Click checkpoint.

    ``unet``: the UNet weights it carries under diffusers names (conv_in (C, 9, 3, 3) among them);
    ``motion_modules``: its v1-style motion modules (eval mode); ``scalar_embeddings``: ``"fps_embedding"`` and
    ``"motion_embedding"`` → ``{"linear_1.weight": (D, C), "linear_1.bias": (D,), "linear_2.weight": (D, D), …}``.
    """

    unet: dict[str, Tensor]
    motion_modules: MotionModuleSet
    scalar_embeddings: dict[str, dict[str, Tensor]]


def load_follow_your_click_checkpoint(path: str, source: str) -> FollowYourClickWeights:
    """The checkpoint at ``path`` (``.safetensors``, or a pickle read with ``weights_only=True``); errors name
    ``source``."""
    return split_follow_your_click_checkpoint(read_state_dict_file(path), source)


def split_follow_your_click_checkpoint(raw: Mapping[str, Any], source: str) -> FollowYourClickWeights:
    """Split a loaded checkpoint into its parts (see :class:`FollowYourClickWeights`), refusing other files."""
    state, pe_length = normalize_motion_state_dict(raw, source)
    _check_is_follow_your_click(state, source)
    if pe_length not in (None, PE_LENGTH):
        raise Pix2GifInputError(
            f"{source}: its motion modules have {pe_length} positions; Follow-Your-Click's are v1-style with "
            f"{PE_LENGTH}, so another motion module was merged into this file. Use the checkpoint as trained.")
    motion = {key: tensor for key, tensor in state.items() if _MOTION_KEY in key}
    scalars = {name: {key: state.get(f"{name}.{key}") for key in SCALAR_EMBEDDING_KEYS} for name in SCALAR_EMBEDDINGS}
    missing = [f"{name}.{key}" for name, weights in scalars.items() for key, tensor in weights.items() if tensor is None]
    if missing:
        raise Pix2GifInputError(f"{source}: no {', '.join(missing)}; the file is incomplete. Expected {EXPECTED}.")
    scalar_keys = {f"{name}.{key}" for name in SCALAR_EMBEDDINGS for key in SCALAR_EMBEDDING_KEYS}
    unet = {key: tensor for key, tensor in state.items() if _MOTION_KEY not in key and key not in scalar_keys}
    return FollowYourClickWeights(unet, build_motion_module_set(motion, PE_LENGTH, source, "v1"), scalars)


def _check_is_follow_your_click(state: Mapping[str, Tensor], source: str) -> None:
    """Name what the file is when it is not a Follow-Your-Click checkpoint."""
    keys = list(state)
    if any(key.startswith(_LDM_PREFIX) for key in keys):
        raise Pix2GifInputError(
            f"{source}: a Stable Diffusion checkpoint (LDM keys '{_LDM_PREFIX}…'), not a Follow-Your-Click one. Load "
            f"it with Load Checkpoint and connect its MODEL to the model input; ckpt_name takes {EXPECTED}.")
    has_motion = any(_MOTION_KEY in key for key in keys)
    if CONV_IN_KEY not in state:
        kind = ("an AnimateDiff motion module (motion-module weights only, no conv_in, no fps/motion embeddings); "
                "load it with Load Motion Model and Apply Motion Model instead" if has_motion
                else f"not a UNet checkpoint (keys like {', '.join(keys[:3]) or 'none'})")
        raise Pix2GifInputError(f"{source}: {kind}. The Follow-Your-Click loader needs {EXPECTED}.")
    channels = state[CONV_IN_KEY].shape[1] if state[CONV_IN_KEY].dim() == 4 else None
    if channels != IN_CHANNELS:
        kind = ("a diffusers Stable Diffusion UNet (conv_in takes 4 channels); load SD1.5 with Load Checkpoint and "
                "connect its MODEL to the model input" if channels == 4
                else f"a UNet whose conv_in has shape {tuple(state[CONV_IN_KEY].shape)}")
        raise Pix2GifInputError(f"{source}: {kind}. The Follow-Your-Click loader needs {EXPECTED}.")
    if not has_motion:
        raise Pix2GifInputError(f"{source}: a 9-channel UNet without motion modules (an inpainting UNet?). "
                                f"The Follow-Your-Click loader needs {EXPECTED}.")
    mid = next((key for key in keys if key.startswith("mid_block.motion_modules.")), None)
    if mid is not None:
        raise Pix2GifInputError(
            f"{source}: carries a mid-block motion module ('{mid}'), i.e. an AnimateDiff v2 motion module merged on "
            "top of Follow-Your-Click's v1-style ones (24 positions, no mid-block module). Use the checkpoint as "
            "trained, without the v2 module.")


def ldm_unet_overrides(unet: Mapping[str, Tensor], layout: UNetLayout, source: str) -> dict[str, Tensor]:
    """``unet`` (diffusers names) under the LDM names of a UNet at ``layout``; a name that is no weight of it
    is an error (the official loader asserts the same)."""
    renamed = {key: ldm_unet_name(key, layout) for key in unet}
    unknown = [key for key, name in renamed.items() if name is None]
    if unknown:
        shown = ", ".join(unknown[:_SHOWN]) + (f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else "")
        raise Pix2GifInputError(
            f"{source}: {len(unknown)} weights are no part of the base SD1.5 UNet ({shown}); the file is of another "
            "model family or the MODEL input is not SD1.5.")
    return {renamed[key]: tensor for key, tensor in unet.items()}
