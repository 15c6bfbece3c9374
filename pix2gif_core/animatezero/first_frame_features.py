"""Frame 1's spatial self-attention keys and values, recorded in the image pass and injected in the video pass.

AnimateZero borrows "the intermediate latents and their features" of the image's own generation (methods.md
§3.2): every frame of the video attends to the keys/values that the IMAGE pass computed for the first frame,
not to those of the video's own frame 1, which already carry the motion modules' residuals. A
:class:`FeatureRecorder` collects, during one model evaluation of the image pass, the projected keys and values
``(T, C)`` of each spatial self-attention layer for each CFG branch; :meth:`FeatureRecorder.take` closes the
evaluation into a :data:`FirstFrameFeatures` mapping, which the trajectory carries with that evaluation.

Keys: ``(branch, layer)`` with ``branch`` ComfyUI's ``cond_or_uncond`` entry (0 = positive, 1 = negative) and
``layer`` ``(block kind, block index, transformer index)`` as ComfyUI names its ``attn1`` positions.
Memory per evaluation and branch: ``2 · Σ_layers T·C`` values (SD1.5 at 512²: 23.1 M, 92 MB in float32).

For the video pass, :func:`stack_features` stacks every evaluation's tensors per branch and layer on the compute
device and :class:`SelectedFeatures` picks one evaluation's by a device index, without reading it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import Pix2GifInputError

LayerKey = tuple[str, int, int]
FirstFrameFeatures = Mapping[tuple[int, LayerKey], tuple[Tensor, Tensor]]


class FeatureRecorder:
    """Collects frame 1's keys/values ``(T, C)`` per branch and layer for the model evaluation in progress.

    ``store`` moves a tensor to where the trajectory is kept (e.g. ComfyUI's intermediate device); it must copy
    or keep the values unchanged, never alias a buffer the model reuses.
    """

    def __init__(self, store: Callable[[Tensor], Tensor]) -> None:
        self._store = store
        self._pending: dict[tuple[int, LayerKey], tuple[Tensor, Tensor]] = {}

    def record(self, branches: Sequence[int], layer: LayerKey, keys: Tensor, values: Tensor) -> None:
        """Keys/values ``(len(branches), T, C)`` of one layer, one image per branch (row r is ``branches[r]``).

        The first record of a branch and layer in an evaluation is kept (the image pass samples one latent).
        """
        if keys.dim() != 3 or keys.shape[0] != len(branches) or values.shape != keys.shape:
            raise Pix2GifInputError(
                f"the first-frame pass must sample one latent per branch: layer {layer} got keys "
                f"{tuple(keys.shape)} and values {tuple(values.shape)} for branches {list(branches)}.")
        for row, branch in enumerate(branches):
            if (branch, layer) not in self._pending:
                self._pending[(branch, layer)] = (self._store(keys[row].detach().clone()),
                                                  self._store(values[row].detach().clone()))

    def take(self) -> dict[tuple[int, LayerKey], tuple[Tensor, Tensor]]:
        """The features of the evaluation in progress; the next record starts a new one."""
        taken, self._pending = self._pending, {}
        return taken


def feature_bytes(features: FirstFrameFeatures) -> int:
    """Bytes held by one evaluation's recorded keys and values."""
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in features.values())


def first_frame_anchors(keys: Tensor, values: Tensor, video_length: int, branches: Sequence[int], layer: LayerKey,
                        features: FirstFrameFeatures) -> tuple[Tensor, Tensor, int]:
    """Keys/values ``(chunks, T, C)`` every frame of each chunk attends to, and how many came from the image pass.

    ``keys``, ``values``: the video pass's ``(chunks·video_length, T, C)``; chunk c is branch ``branches[c]``.
    A chunk whose branch the image pass recorded for ``layer`` gets the recorded tensors (cast to ``keys``'
    device and dtype); any other keeps its own frame 0 (e.g. the negative branch of an inversion at cfg 1).
    """
    chunks = keys.shape[0] // video_length
    if len(branches) != chunks:
        raise Pix2GifInputError(f"{chunks} videos in the batch but {len(branches)} CFG branches named for them.")
    own_keys, own_values = keys[::video_length], values[::video_length]
    anchor_keys, anchor_values, injected = [], [], 0
    for chunk, branch in enumerate(branches):
        recorded = features.get((branch, layer))
        if recorded is not None and recorded[0].shape != own_keys.shape[1:]:
            raise Pix2GifInputError(
                f"the first frame's recorded keys {tuple(recorded[0].shape)} do not fit the video's "
                f"{tuple(own_keys.shape[1:])} in layer {layer}: make the first frame with the video's checkpoint "
                "and size.")
        if recorded is None:
            anchor_keys.append(own_keys[chunk])
            anchor_values.append(own_values[chunk])
        else:
            anchor_keys.append(recorded[0].to(device=keys.device, dtype=keys.dtype))
            anchor_values.append(recorded[1].to(device=values.device, dtype=values.dtype))
            injected += 1
    return torch.stack(anchor_keys), torch.stack(anchor_values), injected


StackedFeatures = dict[tuple[int, LayerKey], tuple[Tensor, Tensor]]
"""Every evaluation's recorded keys/values, stacked per ``(branch, layer)``: ``(evaluations, T, C)`` each."""


def stack_features(per_evaluation: Sequence[FirstFrameFeatures], device: torch.device) -> StackedFeatures | None:
    """The recorded keys/values of all evaluations stacked per branch and layer on ``device`` (their dtype kept:
    :func:`feature_bytes` summed over the evaluations, once more on ``device``); None when the evaluations do not
    all carry the same branches and layers, or carry none."""
    keys = set(per_evaluation[0]) if per_evaluation else set()
    if not keys or any(set(features) != keys for features in per_evaluation):
        return None

    def stacked(key: tuple[int, LayerKey], part: int) -> Tensor:
        first = per_evaluation[0][key][part]
        out = torch.empty((len(per_evaluation), *first.shape), dtype=first.dtype, device=device)
        for row, features in enumerate(per_evaluation):  # copied straight into place: no staging copy
            out[row].copy_(features[key][part])
        return out

    return {key: (stacked(key, 0), stacked(key, 1)) for key in per_evaluation[0]}


class SelectedFeatures(Mapping):
    """One evaluation's keys/values picked from :data:`StackedFeatures` by a device index ``(1,)`` int64: a
    :data:`FirstFrameFeatures` mapping whose lookups gather on the device (nothing is read to the host)."""

    def __init__(self, stacked: StackedFeatures, index: Tensor) -> None:
        self._stacked, self._index = stacked, index

    def __getitem__(self, key: tuple[int, LayerKey]) -> tuple[Tensor, Tensor]:
        keys, values = self._stacked[key]
        return keys.index_select(0, self._index)[0], values.index_select(0, self._index)[0]

    def __iter__(self):
        return iter(self._stacked)

    def __len__(self) -> int:
        return len(self._stacked)
