"""Sizes that cannot fit are refused before anything is allocated, with the estimate, what is free and what to
lower; work that runs naturally in pieces (warps, Measure Motion) runs in chunks with the same result."""
from __future__ import annotations

import importlib
import time

import pytest
import torch

from graphs import txt2vid


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def memory_budget(pack):
    return importlib.import_module(pack.__name__ + ".nodes.memory_budget")


def texture(frames: int, size: int) -> torch.Tensor:
    xs = torch.linspace(0, 12, size)
    pattern = (torch.sin(xs)[None, :] * torch.cos(1.3 * xs)[:, None] + 1) / 2
    return torch.stack([pattern, pattern.T, 1 - pattern], dim=-1)[None].repeat(frames, 1, 1, 1)


def refusal(pack, call) -> str:
    started = time.monotonic()
    with pytest.raises(pack.pix2gif_core.errors.Pix2GifInputError) as refused:
        call()
    assert time.monotonic() - started < 5, "refused up front, not after trying"
    return str(refused.value)


def test_a_preview_too_large_for_memory_is_refused_up_front(host, pack):
    image = torch.zeros(1, 4096, 4096, 3)
    message = refusal(pack, lambda: node("Pix2Gif_MotionPreview").preview(
        image, "zoom", 24.0, 0.0, 1024, "reflect", 0.5, 0.5, 1.0))
    assert message.startswith("[Motion Preview] 1024 frames of 4096×4096 needs about 192.") and "GiB" in message
    assert "lower `frames`" in message


@pytest.mark.parametrize("edge", ["reflect", "crop"])
def test_preview_and_warp_latent_in_small_chunks_equal_one_piece(host, pack, monkeypatch, edge):
    image, latent = texture(1, 64), {"samples": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))}
    motion = ("rotate", 10.0, 0.0, 9, edge, 0.4, 0.6, 1.0)
    whole_preview = node("Pix2Gif_MotionPreview").preview(image, *motion)[0]
    whole_latent = node("Pix2Gif_WarpLatent").warp(latent, *motion)[0]["samples"]
    monkeypatch.setattr(memory_budget(pack), "CHUNK_BYTES", 1)  # one frame per chunk
    assert torch.equal(node("Pix2Gif_MotionPreview").preview(image, *motion)[0], whole_preview)
    assert torch.equal(node("Pix2Gif_WarpLatent").warp(latent, *motion)[0]["samples"], whole_latent)


def test_measure_motion_in_small_chunks_equals_one_piece(host, pack, monkeypatch):
    clip = node("Pix2Gif_MotionPreview").preview(texture(1, 96), "translate", 9.0, 30.0, 6, "reflect", 0.5, 0.5,
                                                 1.0)[0]
    whole = node("Pix2Gif_MeasureMotion").measure(clip)["result"]
    monkeypatch.setattr(memory_budget(pack), "CHUNK_BYTES", 1)
    assert node("Pix2Gif_MeasureMotion").measure(clip)["result"] == whole
    assert whole[0] > 1.0


def test_measure_motion_without_room_for_one_frame_is_refused(host, pack, monkeypatch):
    import comfy.model_management

    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *args, **kwargs: 64 * 2**20)
    message = refusal(pack, lambda: node("Pix2Gif_MeasureMotion").measure(texture(2, 1024)))
    assert message.startswith("[Measure Motion] tracking one frame of 1024×1024 needs about") and "ImageScale" in message


@pytest.mark.parametrize("frames, words", [(4096, "of memory on cpu"), (16, "one model call over 16 frames")])
def test_a_clip_too_large_to_sample_is_refused_before_allocating(host, test_nodes, frames, words):
    prompt = txt2vid(None, frames=frames, size=8192, steps=1)
    test_nodes.CAPTURED.pop("latent", None)
    started = time.monotonic()
    result = host.run(prompt)
    assert time.monotonic() - started < 30
    assert not result.success
    message = result.error["exception_message"]
    assert message.startswith("[GIF Sampler] ") and words in message and "GiB" in message, message
    assert "lower `frames`" in message or "lower `width`/`height`" in message
    assert "latent" not in test_nodes.CAPTURED
    assert host.run(txt2vid(None, frames=2, steps=1)).success
