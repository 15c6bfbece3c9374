"""write_animation: every format decodes to the right frames/timing/loop, metadata round-trips, writes are atomic."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from pix2gif_core.video import animation_writer
from pix2gif_core.video.animation_writer import AnimationOptions, output_path, write_animation
from pix2gif_core.errors import Pix2GifInputError

METADATA = {
    "prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 7, "text": "crème brûlée 🍮"}}}),
    "workflow": json.dumps({"nodes": [{"id": 3, "type": "KSampler"}], "links": []}),
}


def moving_clip(frames: int = 6, height: int = 24, width: int = 32) -> torch.Tensor:
    """(frames, H, W, 3) float in [0, 1]: a diagonal colour ramp that shifts every frame (no two frames equal)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    clip = [torch.stack([(x + 0.1 * t) % 1.0, (y + 0.05 * t) % 1.0, 0.5 + 0.4 * torch.sin(3 * x + y + t)], -1)
            for t in range(frames)]
    return torch.stack(clip)


def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, parsed straight from the bytes (independent of Pillow)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def pillow_frame_count(path: Path) -> int:
    return sum(1 for _ in ImageSequence.Iterator(Image.open(path)))


def write(tmp_path: Path, name: str = "clip", frames: torch.Tensor | None = None, **options) -> Path:
    clip = moving_clip() if frames is None else frames
    return write_animation(clip, tmp_path / name, AnimationOptions(**options), METADATA)


# ---------------------------------------------------------------------------------------------------------------
# Per format


def test_gif_frames_timing_loop_and_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, fmt="gif", fps=10.0, loop=0, pingpong=True)
    assert path == tmp_path / "clip.gif"
    image = Image.open(path)
    assert pillow_frame_count(path) == 10
    assert image.info["loop"] == 0
    assert [f.info["duration"] for f in ImageSequence.Iterator(Image.open(path))] == [100] * 10
    assert json.loads(image.info["comment"]) == METADATA


def test_webp_frames_timing_loop_and_exif(tmp_path: Path) -> None:
    path = write(tmp_path, fmt="webp", fps=6.0, loop=2, webp_quality=90)
    image = Image.open(path)
    assert image.n_frames == 6
    assert image.info["loop"] == 2
    durations = []
    for k in range(image.n_frames):
        image.seek(k)
        image.load()
        durations.append(image.info["duration"])
    assert durations == [167, 166, 167, 167, 166, 167]  # frame k starts at round(k * 1000 / 6) ms: 1000 ms in all
    exif = image.getexif()
    prompt_tag = exif[0x0110]
    assert prompt_tag.startswith("prompt:") and prompt_tag.isascii()  # non-ASCII became JSON \u escapes
    assert json.loads(prompt_tag[len("prompt:") :]) == json.loads(METADATA["prompt"])
    assert exif[0x010F] == "workflow:" + METADATA["workflow"]


def test_webp_lossless_keeps_pixels(tmp_path: Path) -> None:
    frames = moving_clip(frames=3)
    path = write(tmp_path, frames=frames, fmt="webp", webp_lossless=True)
    reference = np.clip(np.floor(frames.double().numpy() * 255 + 0.5), 0, 255)
    decoded = [np.asarray(f.convert("RGB"), dtype=np.float64) for f in ImageSequence.Iterator(Image.open(path))]
    assert len(decoded) == 3
    assert max(np.abs(d - r).max() for d, r in zip(decoded, reference)) <= 1.0


def test_apng_chunks_frames_timing_loop_and_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, fmt="apng", fps=8.0, loop=3, pingpong=True)
    assert path.suffix == ".png"
    chunks = png_chunks(path)
    (actl,) = [data for kind, data in chunks if kind == b"acTL"]
    assert struct.unpack(">II", actl) == (10, 3)  # frames, plays
    delays = []
    for kind, data in chunks:
        if kind == b"fcTL":
            numerator, denominator = struct.unpack(">HH", data[20:24])
            delays.append(1000.0 * numerator / (denominator or 100))
    assert delays == [125.0] * 10
    comf = [data.split(b"\0", 1) for kind, data in chunks if kind == b"comf"]
    assert [key for key, _ in comf] == [b"prompt", b"workflow"]
    assert {key.decode(): json.loads(value.decode("ascii")) for key, value in comf} == {
        key: json.loads(value) for key, value in METADATA.items()
    }
    last_idat = max(i for i, (kind, _) in enumerate(chunks) if kind in (b"IDAT", b"fdAT"))
    assert all(i > last_idat for i, (kind, _) in enumerate(chunks) if kind == b"comf")  # after the image data
    assert pillow_frame_count(path) == 10


def test_mp4_frames_size_rate_and_metadata(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    path = write(tmp_path, frames=moving_clip(frames=5, height=23, width=31), fmt="mp4", fps=12.0, pingpong=True)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (32, 24)  # padded to even
        assert stream.average_rate == 12
        assert sum(1 for _ in container.decode(video=0)) == 8
        assert container.metadata["prompt"] == METADATA["prompt"]
        assert container.metadata["workflow"] == METADATA["workflow"]


def test_mp4_without_pyav_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(Pix2GifInputError, match="pip install av"):
        write(tmp_path, fmt="mp4")
    assert list(tmp_path.iterdir()) == []


def test_no_metadata_writes_plain_files(tmp_path: Path) -> None:
    for fmt in ("gif", "webp", "apng"):
        path = write_animation(moving_clip(frames=2), tmp_path / f"plain-{fmt}", AnimationOptions(fmt=fmt))
        assert pillow_frame_count(path) == 2
        assert "comment" not in Image.open(path).info


# ---------------------------------------------------------------------------------------------------------------
# Paths and atomicity


def test_output_path_extensions(tmp_path: Path) -> None:
    assert output_path(tmp_path / "a", "gif") == tmp_path / "a.gif"
    assert output_path(tmp_path / "a.GIF", "gif") == tmp_path / "a.GIF"
    assert output_path(tmp_path / "a.apng", "apng") == tmp_path / "a.apng"
    assert output_path(tmp_path / "a.v2", "mp4") == tmp_path / "a.v2.mp4"
    with pytest.raises(Pix2GifInputError, match="^path"):
        output_path(tmp_path / "a.gif", "webp")


def test_existing_file_is_replaced_and_directories_created(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "clip.gif"
    first = write_animation(moving_clip(frames=2), target, AnimationOptions())
    second = write_animation(moving_clip(frames=4), target, AnimationOptions())
    assert first == second == target
    assert pillow_frame_count(target) == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.gif"]


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failed_encode_leaves_nothing_and_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    target = tmp_path / "clip.webp"
    target.write_bytes(b"previous version")

    def encode_half_then_fail(sequence, fp, options, metadata):
        fp.write(b"RIFF partial")
        raise failure("encoder died mid-way")

    monkeypatch.setattr(animation_writer, "_save_pillow", encode_half_then_fail)
    with pytest.raises(failure):
        write(tmp_path, fmt="webp")
    assert target.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.webp"]


def test_mp4_failing_after_some_frames_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    av = pytest.importorskip("av")
    real_from_ndarray = av.VideoFrame.from_ndarray
    calls = []

    def from_ndarray_failing_on_third(array, format):  # noqa: A002 - PyAV's keyword
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("frame 3 broke")
        return real_from_ndarray(array, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", from_ndarray_failing_on_third)
    with pytest.raises(RuntimeError, match="frame 3 broke"):
        write(tmp_path, fmt="mp4")
    assert list(tmp_path.iterdir()) == []


def test_gif_failing_inside_pillow_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"GIF89a...")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, fmt="gif")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"fmt": "avi"}, "fmt"),
        ({"fps": 0.0}, "fps"),
        ({"fps": -1.0}, "fps"),
        ({"fps": float("inf")}, "fps"),
        ({"loop": -1}, "loop"),
        ({"loop": 1.5}, "loop"),
        ({"pingpong": "yes"}, "pingpong"),
        ({"gif_dither": "random"}, "gif_dither"),
        ({"webp_quality": 101}, "webp_quality"),
        ({"mp4_crf": 52}, "mp4_crf"),
    ],
)
def test_bad_options_raise(options: dict, named: str) -> None:
    with pytest.raises(Pix2GifInputError, match=f"^{named}"):
        AnimationOptions(**options)


@pytest.mark.parametrize(
    "frames",
    [torch.zeros(0, 8, 8, 3), torch.zeros(2, 8, 8, 4), torch.zeros(2, 8, 8, 1), torch.full((2, 8, 8, 3), float("nan"))],
)
def test_bad_frames_raise_and_write_nothing(tmp_path: Path, frames: torch.Tensor) -> None:
    with pytest.raises(Pix2GifInputError, match="^frames"):
        write_animation(frames, tmp_path / "clip", AnimationOptions(fmt="webp"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("metadata", [{"prompt": {"not": "text"}}, {"": "x"}, {"a:b": "x"}, ["prompt"]])
def test_bad_metadata_raises(tmp_path: Path, metadata) -> None:
    with pytest.raises(Pix2GifInputError, match="^metadata"):
        write_animation(moving_clip(frames=2), tmp_path / "clip", AnimationOptions(), metadata)



class _Cancelled(Exception):
    pass


@pytest.mark.parametrize("fmt", ["gif", "webp", "apng", "mp4"])
def test_cancel_between_frames_stops_the_encode_and_leaves_nothing(tmp_path, fmt):
    if fmt == "mp4":
        pytest.importorskip("av")
    frames = torch.rand(8, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    calls = []

    def cancel_at_the_fifth_frame():
        calls.append(1)
        if len(calls) == 5:
            raise _Cancelled

    target = tmp_path / "clip"
    with pytest.raises(_Cancelled):
        animation_writer.write_animation(frames, target, animation_writer.AnimationOptions(fmt=fmt),
                                         check_cancel=cancel_at_the_fifth_frame)
    assert list(tmp_path.iterdir()) == [], "no partial or temporary file is left"
    written = animation_writer.write_animation(frames, target, animation_writer.AnimationOptions(fmt=fmt),
                                               check_cancel=lambda: None)
    assert written.is_file()
