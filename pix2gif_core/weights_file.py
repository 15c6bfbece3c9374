"""Reading a weights file: the top-level dict of a ``.safetensors`` file or a torch pickle, read safely.

Shared by every loader of the pack (motion modules, Pix2Gif checkpoints, and the loaders to come); a file that
cannot be read becomes one :class:`Pix2GifInputError` naming the file.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import safetensors.torch
import torch

from .errors import Pix2GifInputError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_PICKLED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # torch names the refused object, e.g. "GLOBAL posix.system"


def read_state_dict_file(path: str) -> dict[str, Any]:
    """The top-level dict of a ``.safetensors`` file or of a ``.ckpt/.pt/.pth/.bin`` torch pickle.

    Pickles are read with ``weights_only=True``: one that carries code or arbitrary objects is refused.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise Pix2GifInputError(
            f"File '{path}' has an unsupported extension '{suffix}'; supported: "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}."
        )
    if not os.path.isfile(path):
        raise Pix2GifInputError(f"File '{path}' does not exist; check the path or the models folder.")
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            return safetensors.torch.load_file(path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = _PICKLED_GLOBAL.search(str(error))
        if culprit is None:
            raise _unreadable(path, "its pickle data is damaged or not a PyTorch checkpoint") from error
        raise Pix2GifInputError(
            f"File '{path}' contains Python code or objects besides tensors ({culprit.group(1)}); "
            "it was refused for safety. Convert it to .safetensors with a tool you trust, or download the "
            ".safetensors release."
        ) from error
    except Exception as error:  # noqa: BLE001 - any failure to parse a user's file becomes one clear message
        first_line = next(iter(str(error).strip().splitlines()), "")[:200]
        raise _unreadable(path, f"{type(error).__name__}: {first_line}") from error
    if not isinstance(loaded, Mapping):
        raise Pix2GifInputError(f"File '{path}' holds a {type(loaded).__name__}, not a dict of weights.")
    return dict(loaded)


def _unreadable(path: str, reason: str) -> Pix2GifInputError:
    return Pix2GifInputError(
        f"File '{path}' could not be read ({reason}); it is damaged, incomplete or not a weights file. "
        "Download it again."
    )
