"""What every node of the pack shares: its id prefix, category tree and how user errors are reported."""
from __future__ import annotations

import functools
import math
import os
from contextlib import contextmanager

from ..pix2gif_core.errors import Pix2GifInputError

ID_PREFIX = "Pix2Gif_"
CATEGORY = "Pix2Gif"


def node_id(name: str) -> str:
    return ID_PREFIX + name


def category(sub: str) -> str:
    """``Pix2Gif/<sub>``; the Pix2Gif method's own nodes sit at the top, ``Pix2Gif``."""
    return CATEGORY if sub == CATEGORY else f"{CATEGORY}/{sub}"


def display_name(title: str) -> str:
    """The title with the pack's name once: "Motion Preview (Pix2Gif)", but "Load Pix2Gif Model"."""
    return title if CATEGORY in title else f"{title} ({CATEGORY})"


@contextmanager
def reported_as(node_title: str):
    """Prefix any :class:`Pix2GifInputError` raised inside with the node's title, so the user knows where
    (messages that already name a node, e.g. from :func:`input_error`, pass unchanged)."""
    try:
        yield
    except Pix2GifInputError as err:
        if str(err).startswith("["):
            raise
        raise Pix2GifInputError(f"[{node_title}] {err}") from None


def input_error(node_title: str, message: str) -> Pix2GifInputError:
    return Pix2GifInputError(f"[{node_title}] {message}")


def managed_model(module, load_device, offload_device):
    """``module`` as a model of ComfyUI's model management (loaded, offloaded and counted like its own models),
    with the host's patcher class – ``CoreModelPatcher``, DynamicVRAM's ``ModelPatcherDynamic`` when that is on."""
    import comfy.model_patcher

    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return patcher_class(module, load_device=load_device, offload_device=offload_device)


def path_inside(folder: str, path: str) -> bool:
    """Whether ``path`` stays inside ``folder`` once links and ``..`` are resolved (for user-given prefixes)."""
    folder = os.path.realpath(folder)
    return os.path.commonpath((folder, os.path.realpath(path))) == folder


#: LATENT channels of the SD1.5 family, the only one the pack's nodes take
LATENT_CHANNELS = 4


def _float_problem(value) -> str | None:
    if isinstance(value, (int, float)) and not math.isfinite(value):
        return f"is {value}; give a finite number"
    return None


def _tensor_problem(tensor, kind: str) -> str | None:
    """What is wrong with an IMAGE (B, H, W, 3|4), LATENT samples (B, 4, h, w) or MASK (B, H, W) tensor."""
    shape = tuple(tensor.shape)
    if kind == "IMAGE" and (len(shape) != 4 or shape[-1] not in (3, 4)):
        return f"has shape {shape}; an IMAGE is (frames, height, width, 3 or 4 channels)"
    if kind == "LATENT" and (len(shape) != 4 or shape[1] != LATENT_CHANNELS):
        return (f"has shape {shape}; an SD1.5 latent is (frames, {LATENT_CHANNELS}, height/8, width/8) – encode "
                "with an SD1.5 VAE")
    if shape and shape[0] == 0:
        return "holds 0 frames; give at least one"
    if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
        return "holds NaN or infinite values; check the node that made it"
    return None


def checking_inputs(node_class):
    """``node_class`` with its FUNCTION checking, before anything else, every FLOAT (finite), IMAGE, LATENT and
    MASK input (shape, frames, finite), naming the node and the input in the error.

    ComfyUI's min/max check lets NaN through (every comparison with NaN is false), and tensors between nodes are
    never checked: without this, NaN guidance or a NaN image gives a NaN video, a 16-channel latent a raw torch
    error deep in sampling."""
    inputs = node_class.INPUT_TYPES()
    kinds = {name: spec[0] for section in ("required", "optional") for name, spec in inputs.get(section, {}).items()
             if spec[0] in ("FLOAT", "IMAGE", "LATENT", "MASK")}
    if not kinds:
        return node_class
    run = getattr(node_class, node_class.FUNCTION)

    @functools.wraps(run)
    def checked(self, *args, **kwargs):
        for name, kind in kinds.items():
            value = kwargs.get(name)
            if value is None:
                continue
            if kind == "FLOAT":
                problem = _float_problem(value)
            else:
                tensor = value.get("samples") if kind == "LATENT" and isinstance(value, dict) else value
                problem = _tensor_problem(tensor, kind) if hasattr(tensor, "shape") else None
            if problem:
                raise input_error(node_class.TITLE, f"{name} {problem}")
        return run(self, *args, **kwargs)

    setattr(node_class, node_class.FUNCTION, checked)
    return node_class
