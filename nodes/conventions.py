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


def refusing_non_finite_floats(node_class):
    """``node_class`` with its FUNCTION refusing NaN or infinite FLOAT inputs, naming the node and the input.

    ComfyUI's min/max check lets NaN through (every comparison with NaN is false), so an API prompt or an edited
    workflow could otherwise hand a node NaN guidance, denoise or magnitudes."""
    inputs = node_class.INPUT_TYPES()
    floats = [name for section in ("required", "optional") for name, spec in inputs.get(section, {}).items()
              if spec[0] == "FLOAT"]
    if not floats:
        return node_class
    run = getattr(node_class, node_class.FUNCTION)

    @functools.wraps(run)
    def checked(self, *args, **kwargs):
        for name in floats:
            value = kwargs.get(name)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise input_error(node_class.TITLE, f"{name} is {value}; give a finite number")
        return run(self, *args, **kwargs)

    setattr(node_class, node_class.FUNCTION, checked)
    return node_class
