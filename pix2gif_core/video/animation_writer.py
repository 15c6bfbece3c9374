"""Write a clip as an animated GIF, WebP, APNG or MP4 file -- atomically, with ComfyUI workflow metadata.

One entry point, :func:`write_animation`. The file is written through :func:`..atomic_file.atomic_output`:
readers (ComfyUI's preview, a file watcher) never see a half-written file, and if encoding fails for any
reason (a full disk, a cancelled prompt) nothing is left behind and an existing target stays as it was.

Metadata is a ``{name: text}`` mapping; ComfyUI passes ``"prompt"`` and ``"workflow"`` as JSON text. Where it
goes (the conventions ComfyUI's own SaveAnimatedWEBP / SaveAnimatedPNG / SaveVideo use, so drag-and-drop
reload works where ComfyUI supports it):

- GIF: one comment extension holding ``json.dumps(metadata)`` (an object of the texts).
- WebP: EXIF; ``prompt`` as ``"prompt:<text>"`` in tag 0x0110 (Model), every other key as ``"<key>:<text>"``
  from tag 0x010F (Make) downwards in the mapping's order (at most 15 of them).
- APNG: one private ``comf`` chunk per key after the image data, ``<key> NUL <text>``, prompt first.
- MP4: one container metadata tag per key (written with ``movflags=use_metadata_tags``).

EXIF and PNG chunks are written as ASCII: non-ASCII characters in a text become JSON ``\\uXXXX`` escapes,
which keeps JSON text meaning the same (ComfyUI's own ``json.dumps`` output is already ASCII).

Playback: ``fps`` sets per-frame display times; rounding to the format's time unit (10 ms for GIF, 1 ms for
WebP/APNG) is spread so the total duration stays N / fps (see :func:`frame_durations_ms`). ``loop`` is how many
times the animation plays, 0 = forever (GIF/WebP/APNG; MP4 has no loop field -- players decide).
``pingpong`` plays forwards then backwards (6 frames -> 10).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..atomic_file import atomic_output
from ..errors import Pix2GifInputError
from .gif_encoder import (
    CancelCheck,
    GifDither,
    as_uint8_frames,
    check_fps,
    check_loop,
    each_frame,
    encode_gif,
    frame_durations_ms,
    pingpong_order,
)

AnimationFormat = Literal["gif", "webp", "apng", "mp4"]

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "gif": (".gif",),
    "webp": (".webp",),
    "apng": (".png", ".apng"),
    "mp4": (".mp4",),
}
_EXIF_PROMPT_TAG = 0x0110  # Model
_EXIF_FIRST_EXTRA_TAG = 0x010F  # Make; further keys count down from here
_EXIF_MAX_EXTRA_KEYS = 15


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Pix2GifInputError(f"{name}: must be an integer {low}..{high}, got {value!r}.")


@dataclass(frozen=True)
class AnimationOptions:
    """How to write the animation; validated on construction (Pix2GifInputError names the bad field).

    fmt: file format. fps: frames per second (> 0). loop: plays, 0 = forever. pingpong: forwards then back.
    gif_dither: "none" | "ordered" | "floyd-steinberg" (see gif_encoder). webp_lossless / webp_quality (0-100):
    Pillow's WebP settings. mp4_crf: x264 constant rate factor, 0 (lossless) .. 51 (worst); 19 ~ visually clean.
    """

    fmt: AnimationFormat = "gif"
    fps: float = 8.0
    loop: int = 0
    pingpong: bool = False
    gif_dither: GifDither = "none"
    webp_lossless: bool = False
    webp_quality: int = 80
    mp4_crf: int = 19

    def __post_init__(self) -> None:
        if self.fmt not in EXTENSIONS:
            raise Pix2GifInputError(f"fmt: must be one of {tuple(EXTENSIONS)}, got {self.fmt!r}.")
        check_fps(self.fps)
        check_loop(self.loop)
        for flag in ("pingpong", "webp_lossless"):
            if not isinstance(getattr(self, flag), bool):
                raise Pix2GifInputError(f"{flag}: must be True or False, got {getattr(self, flag)!r}.")
        if self.gif_dither not in get_args(GifDither):
            raise Pix2GifInputError(f"gif_dither: must be one of {get_args(GifDither)}, got {self.gif_dither!r}.")
        _check_int("webp_quality", self.webp_quality, 0, 100)
        _check_int("mp4_crf", self.mp4_crf, 0, 51)


def output_path(path: str | os.PathLike[str], fmt: AnimationFormat) -> Path:
    """The final file name: ``path`` if it already ends in ``fmt``'s extension, else ``path`` + extension.

    A path ending in another animation format's extension (``clip.gif`` with fmt="mp4") is an error.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in EXTENSIONS[fmt]:
        return path
    if any(suffix in extensions for extensions in EXTENSIONS.values()):
        raise Pix2GifInputError(
            f"path: '{path.name}' ends in {suffix} but the format is {fmt!r}; use {EXTENSIONS[fmt][0]} or no extension."
        )
    return path.with_name(path.name + EXTENSIONS[fmt][0])


def _checked_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise Pix2GifInputError(f"metadata: expected a mapping of name -> text, got {type(metadata).__name__}.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise Pix2GifInputError(f"metadata: key {key!r} must be a non-empty ASCII name (letters, digits, _ . -).")
        if not isinstance(value, str):
            raise Pix2GifInputError(
                f"metadata: value of {key!r} must be text (e.g. json.dumps(...)), got {type(value).__name__}."
            )
    return dict(metadata)


def _ascii_json(text: str) -> str:
    """Replace each non-ASCII character by its JSON escape (surrogate pairs above U+FFFF)."""
    return re.sub(r"[^\x00-\x7f]", lambda match: json.dumps(match.group())[1:-1], text)


def _webp_exif(metadata: dict[str, str]) -> Image.Exif:
    exif = Image.Exif()
    extras = [(key, value) for key, value in metadata.items() if key != "prompt"]
    if len(extras) > _EXIF_MAX_EXTRA_KEYS:
        raise Pix2GifInputError(
            f"metadata: WebP EXIF holds 'prompt' plus at most {_EXIF_MAX_EXTRA_KEYS} keys, got {len(extras)}."
        )
    if "prompt" in metadata:
        exif[_EXIF_PROMPT_TAG] = "prompt:" + _ascii_json(metadata["prompt"])
    for offset, (key, value) in enumerate(extras):
        exif[_EXIF_FIRST_EXTRA_TAG - offset] = f"{key}:{_ascii_json(value)}"
    return exif


def _png_info(metadata: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in sorted(metadata.items(), key=lambda item: item[0] != "prompt"):  # prompt first, like ComfyUI
        info.add(b"comf", key.encode("ascii") + b"\0" + _ascii_json(value).encode("ascii"), after_idat=True)
    return info


def _save_pillow(
    sequence: Sequence[Image.Image], fp: BinaryIO, options: AnimationOptions, metadata: dict[str, str]
) -> None:
    """Animated WebP or APNG through Pillow (one uninterruptible call: its encoders need the whole list)."""
    durations = frame_durations_ms(len(sequence), options.fps)
    common = {"save_all": True, "append_images": list(sequence[1:]), "duration": durations, "loop": options.loop}
    if options.fmt == "webp":
        sequence[0].save(fp, format="WEBP", lossless=options.webp_lossless, quality=options.webp_quality,
                         method=4, exif=_webp_exif(metadata), **common)
    else:
        sequence[0].save(fp, format="PNG", pnginfo=_png_info(metadata), compress_level=4, **common)


def _save_mp4(
    rgb: np.ndarray, order: list[int], fp: BinaryIO, options: AnimationOptions, metadata: dict[str, str],
    check_cancel: CancelCheck | None,
) -> None:
    """H.264 yuv420p via PyAV. Odd widths/heights are padded by one pixel (the last column/row repeated),
    since 4:2:0 chroma needs even sizes; the video is then one pixel wider/taller than the frames."""
    try:
        import av
    except ImportError as error:
        raise Pix2GifInputError("fmt: MP4 needs PyAV: pip install av") from error
    _, height, width, _ = rgb.shape
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    with av.open(fp, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        for key, value in metadata.items():
            container.metadata[key] = value
        stream = container.add_stream("libx264", rate=Fraction(options.fps).limit_denominator(1001))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(options.mp4_crf)}
        for index in each_frame(order, check_cancel):
            frame = np.pad(rgb[index], pad, mode="edge") if height % 2 or width % 2 else rgb[index]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_animation(
    frames: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    options: AnimationOptions = AnimationOptions(),
    metadata: Mapping[str, str] | None = None,
    check_cancel: CancelCheck | None = None,
) -> Path:
    """Encode ``frames`` (N, H, W, 3): float in [0, 1] (any device) or uint8 -> the written file's path.

    ``path`` gets the format's extension if it has none (see :func:`output_path`); missing directories are
    created; an existing file is replaced atomically. Raises Pix2GifInputError for bad frames, options,
    metadata or path. ``check_cancel`` is called between frames (GIF and MP4: while encoding; WebP and APNG:
    before Pillow's one encoding call); what it raises stops the encode and leaves no file (an existing one stays
    as it was).
    """
    if not isinstance(options, AnimationOptions):
        raise Pix2GifInputError(f"options: expected AnimationOptions, got {type(options).__name__}.")
    final = output_path(path, options.fmt)
    texts = _checked_metadata(metadata)
    rgb = as_uint8_frames(frames)
    order = pingpong_order(len(rgb)) if options.pingpong else list(range(len(rgb)))
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(final) as handle:
        if options.fmt == "gif":
            encode_gif(rgb, handle, fps=options.fps, loop=options.loop, pingpong=options.pingpong,
                       dither=options.gif_dither, comment=json.dumps(texts) if texts else None,
                       check_cancel=check_cancel)
        elif options.fmt == "mp4":
            _save_mp4(rgb, order, handle, options, texts, check_cancel)
        else:
            images = [Image.fromarray(frame) for frame in each_frame(rgb, check_cancel)]
            _save_pillow([images[i] for i in order], handle, options, texts)
    return final


def write_workflow_image(frame: torch.Tensor | np.ndarray, path: str | os.PathLike[str],
                         metadata: Mapping[str, str]) -> Path:
    """One frame (H, W, 3) as a PNG carrying ``metadata`` as text chunks (ComfyUI reads its workflow back from
    them): the companion of a GIF, whose comment ComfyUI's front end does not read. Atomic like the clip."""
    final = Path(path)
    if final.suffix.lower() != ".png":
        raise Pix2GifInputError(f"workflow image '{final}': the file name must end in .png.")
    texts = _checked_metadata(metadata)
    rgb = as_uint8_frames(frame[None] if frame.ndim == 3 else frame)
    final.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()  # tEXt chunks, as ComfyUI's SaveImage writes them (APNG uses "comf" chunks instead)
    for key, value in texts.items():
        info.add_text(key, value)
    with atomic_output(final) as handle:
        Image.fromarray(rgb[0]).save(handle, format="PNG", pnginfo=info, compress_level=4)
    return final
