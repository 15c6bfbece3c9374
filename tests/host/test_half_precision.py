"""Half-precision intermediates (ComfyUI's --fp16-intermediates, fp16 GPU pipelines): the pack's warps, resizes
and measurements compute in float32 and hand back the caller's dtype – finite, within fp16 rounding of a float32
run of the same nodes."""
from __future__ import annotations

import pytest
import torch

import workflow

HALF_ATOL = 4e-3  # a few float16 steps at values ≤ 1


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def image(size: int = 64) -> torch.Tensor:
    xs = torch.linspace(0, 1, size)
    pattern = (torch.sin(12 * xs)[None, :] * torch.cos(9 * xs)[:, None] + 1) / 2
    return torch.stack([pattern, pattern.T, 1 - pattern], dim=-1)[None]


MOTION = ("rotate", 6.0, 20.0, 4, "reflect", 0.5, 0.5, 1.0)


def test_motion_preview(host):
    full = node("Pix2Gif_MotionPreview").preview(image(), *MOTION)[0]
    half = node("Pix2Gif_MotionPreview").preview(image().half(), *MOTION)[0]
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0, atol=HALF_ATOL)


def test_warp_latent_with_a_half_mask(host):
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 128, 128)
    mask[:, 32:96, 32:96] = 1.0
    full = node("Pix2Gif_WarpLatent").warp({"samples": latent}, *MOTION, mask=mask)[0]["samples"]
    half = node("Pix2Gif_WarpLatent").warp({"samples": latent.half()}, *MOTION, mask=mask.half())[0]["samples"]
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0, atol=4 * HALF_ATOL)  # latents reach |4|


def test_measure_motion(host):
    frames = node("Pix2Gif_MotionPreview").preview(image(96), "translate", 6.0, 0.0, 3, "reflect", 0.5, 0.5, 1.0)[0]
    measure = node("Pix2Gif_MeasureMotion").measure
    full = measure(frames.half().float(), reference=frames[:1].half().float())["result"]
    half = measure(frames.half(), reference=frames[:1].half())["result"]
    assert half[0] == pytest.approx(full[0], abs=1e-3)


def test_pix2gif_sampler_resizes_a_half_image(host, tmp_path):
    import folder_paths

    workflow.write_tiny_pix2gif(tmp_path / "half_pix2gif.ckpt")
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path))
    with torch.inference_mode():
        model, clip, vae, motion = node("Pix2Gif_LoadPix2GifModel").load("half_pix2gif.ckpt", True)

        def frames(picture):
            return node("Pix2Gif_Pix2GifSampler").sample(model, clip, vae, motion, picture, "clouds", "4", 1, 1,
                                                         7.5, 1.8, "euler", "normal", "all frames in one batch")[0]

        half, full = frames(image(96).half()), frames(image(96).half().float())
    assert half.shape == full.shape == (1, 96, 96, 3) and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full.float(), rtol=0, atol=0.02)
