"""Clicks on an image as the click picker stores them: JSON ``[[x, y, label], …]`` in image pixels.

``label`` 1 marks the object (positive click), 0 the background (negative click); ``[x, y]`` alone is positive.
x runs right from the left edge, y down from the top edge; pixel centres are at integers, so a click is inside an
image of ``width × height`` pixels when ``0 ≤ x ≤ width − 1`` and ``0 ≤ y ≤ height − 1``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..errors import Pix2GifInputError

POSITIVE, NEGATIVE = 1, 0


@dataclass(frozen=True)
class Clicks:
    """``points``: ``(x, y)`` image pixels; ``labels``: :data:`POSITIVE` or :data:`NEGATIVE` per point."""

    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]


def _point(entry, index: int) -> tuple[float, float, int]:
    if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
        raise Pix2GifInputError(f"points: entry {index + 1} is {json.dumps(entry)}; write each click as [x, y, 1] "
                                "(object) or [x, y, 0] (background)")
    x, y, label = (*entry, POSITIVE) if len(entry) == 2 else entry
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x, y)):
        raise Pix2GifInputError(f"points: entry {index + 1} has x, y = {json.dumps([x, y])}; give finite numbers")
    if label not in (POSITIVE, NEGATIVE) or isinstance(label, bool):
        raise Pix2GifInputError(f"points: entry {index + 1} has label {json.dumps(label)}; use 1 (object) or 0 "
                                "(background)")
    return float(x), float(y), int(label)


def parse_clicks(text: str, width: int, height: int) -> Clicks:
    """The clicks of ``text`` checked against an image of ``width × height`` pixels; raises
    :class:`Pix2GifInputError` for malformed JSON, no positive click or a click outside the image."""
    try:
        entries = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as err:
        raise Pix2GifInputError(f"points is not JSON ({err.msg} at character {err.pos}); write "
                                "[[x, y, 1], [x, y, 0]] in image pixels") from None
    if not isinstance(entries, list):
        raise Pix2GifInputError("points must be a JSON list of clicks [[x, y, 1], …]")
    parsed = [_point(entry, index) for index, entry in enumerate(entries)]
    if not any(label == POSITIVE for _, _, label in parsed):
        raise Pix2GifInputError("points holds no click on the object; add at least one [x, y, 1] (click on the "
                                "object in the image preview)")
    for index, (x, y, _) in enumerate(parsed):
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise Pix2GifInputError(
                f"points: click {index + 1} at ({x:g}, {y:g}) is outside the {width}×{height} image; x must lie in "
                f"0…{width - 1} and y in 0…{height - 1} (pixels of the image given to this node)")
    return Clicks(tuple((x, y) for x, y, _ in parsed), tuple(label for _, _, label in parsed))
