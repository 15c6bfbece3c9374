"""Model folders the pack registers with ComfyUI (``models/<id>``), shared with AnimateDiff-Evolved users."""
from __future__ import annotations

import os
from collections.abc import Callable

import folder_paths

from .conventions import input_error

MOTION_MODELS = "animatediff_models"
MOTION_EMBEDDINGS = "motion_embeddings"
WEIGHT_EXTENSIONS = {".ckpt", ".pt", ".pth", ".safetensors", ".sft"}


def register(folder_id: str) -> None:
    """Add ``<ComfyUI>/models/<folder_id>`` (created if missing) and accept weight-file extensions there."""
    path = os.path.join(folder_paths.models_dir, folder_id)
    os.makedirs(path, exist_ok=True)
    if folder_id not in folder_paths.folder_names_and_paths or path not in folders(folder_id):
        folder_paths.add_model_folder_path(folder_id, path)
    paths, extensions = folder_paths.folder_names_and_paths[folder_id]
    folder_paths.folder_names_and_paths[folder_id] = (paths, set(extensions) | WEIGHT_EXTENSIONS)


def folders(folder_id: str) -> list[str]:
    return list(folder_paths.get_folder_paths(folder_id))


def files(folder_id: str) -> list[str]:
    return folder_paths.get_filename_list(folder_id)


def full_path(folder_id: str, name: str) -> str | None:
    return folder_paths.get_full_path(folder_id, name)


def choice_error(folder_id: str, name: str, input_name: str, node_title: str,
                 when_empty: Callable[[], str], available: list[str] | None = None) -> str | None:
    """The VALIDATE_INPUTS message when ``name`` is not one of ``available`` (default: the files of
    ``models/<folder_id>``; None when it is); ``when_empty()`` says where to put files when there are none."""
    available = files(folder_id) if available is None else available
    if name in available:
        return None
    if not available:
        return f"[{node_title}] {when_empty()}"
    return f"[{node_title}] {input_name}: '{name}' is not in models/{folder_id}; pick one from the list"


def chosen_path(folder_id: str, name: str, node_title: str, when_empty: Callable[[], str]) -> str:
    """The full path of the chosen file, or the node's error saying where to put files."""
    path = full_path(folder_id, name)
    if path is None:
        raise input_error(node_title, when_empty())
    return path


register(MOTION_MODELS)
register(MOTION_EMBEDDINGS)
