"""I2VGen-XL Refine (the cascade's second stage) through a real ComfyUI host: a base clip resized, encoded, brought
to a noise level (SDEdit noise or DDIM inversion) and re-sampled by ComfyUI's sampler, with the tiny I2VGen-XL UNet
or the tiny SD1.5 + AnimateDiff model as the refiner."""
from __future__ import annotations

import pytest
import torch

REFINE = "Pix2Gif_I2VGenXLRefine"
FRAMES = 3
CLIP_VISION_DIM = 64  # = the tiny test CLIP's text width = the tiny UNet's cross_attention_dim


def refine_prompt(refiner: str = "i2vgen", *, source: str = "images", width: int = 64, height: int = 64,
                  clip_size: tuple[int, int] = (48, 32), frames: int = FRAMES, level: int = 700,
                  mode: str = "noise (SDEdit)", steps: int = 2, cfg: float = 9.0, sampler: str = "euler",
                  clip_vision: bool = True, motion_file: str | None = None,
                  inversion_text: str | None = None) -> dict:
    """Base clip (IMAGE, or its LATENT) → I2VGen-XL Refine → captured as "refined"; the clip's own VAE Encode is
    captured as "encoded" (``source`` "both"/"none" connects both/neither input; ``inversion_text`` a text encoded
    into Refine's inversion_text)."""
    graph = {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": "sd15"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "sharp, detailed", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "clip": {"class_type": "Pix2GifTest_RandomClip", "inputs": {"frames": frames, "width": clip_size[0],
                                                                    "height": clip_size[1], "seed": 0}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["clip", 0], "vae": ["ckpt", 2]}},
        "vision": {"class_type": "Pix2GifTest_TinyCLIPVision",
                   "inputs": {"projection_dim": CLIP_VISION_DIM, "seed": 5}},
        "capture_encoded": {"class_type": "Pix2GifTest_CaptureLatent",
                            "inputs": {"samples": ["encode", 0], "key": "encoded"}},
    }
    if refiner == "i2vgen":
        graph["unet"] = {"class_type": "Pix2Gif_LoadI2VGenXLModel",
                         "inputs": {"unet_name": "tiny_i2vgen_xl.safetensors", "weight_dtype": "as stored"}}
        model = ["unet", 0]
    elif refiner == "animatediff":
        graph["load_mm"] = {"class_type": "Pix2Gif_LoadMotionModel",
                            "inputs": {"model_name": motion_file, "version": "auto"}}
        graph["apply_mm"] = {"class_type": "Pix2Gif_ApplyMotionModel",
                             "inputs": {"model": ["ckpt", 0], "motion_model": ["load_mm", 0], "motion_scale": 1.0,
                                        "beta_schedule": "sqrt_linear (AnimateDiff)", "groupnorm": "per-frame"}}
        model = ["apply_mm", 0]
    else:  # the plain SD1.5 MODEL
        model = ["ckpt", 0]
    inputs = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "width": width,
              "height": height, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": "normal",
              "seed": 3, "noise_level": level, "mode": mode, "fps": 16}
    if source in ("images", "both"):
        inputs["images"] = ["clip", 0]
    if source in ("latent", "both"):
        inputs["latent"] = ["encode", 0]
    if clip_vision:
        inputs["clip_vision"] = ["vision", 0]
    if inversion_text is not None:
        graph["inversion"] = {"class_type": "CLIPTextEncode", "inputs": {"text": inversion_text, "clip": ["ckpt", 1]}}
        inputs["inversion_text"] = ["inversion", 0]
    graph["refine"] = {"class_type": REFINE, "inputs": inputs}
    graph["capture_refined"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                "inputs": {"samples": ["refine", 0], "key": "refined"}}
    return graph


def _run(host, test_nodes, graph: dict, executor=None) -> dict:
    result = host.run(graph, executor=executor)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED


@pytest.mark.parametrize("source", ["images", "latent"])
def test_level_0_returns_the_clip_after_the_vae_round_trip_exactly(host, test_nodes, i2vgen_unet_files, source):
    """At the clip's own size the resize is the identity: the refined LATENT is the clip's VAE Encode, bit for bit
    (a LATENT input is decoded and encoded again first)."""
    captured = _run(host, test_nodes, refine_prompt(source=source, level=0, width=48, height=32))
    if source == "images":
        assert torch.equal(captured["refined"], captured["encoded"])
    else:  # decode → encode of the latent: the VAE round trip of the clip's VAE round trip
        graph = refine_prompt(level=0, width=48, height=32)
        graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": ["ckpt", 2]}}
        graph["encode_again"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["decode", 0], "vae": ["ckpt", 2]}}
        graph["capture_encoded"]["inputs"]["samples"] = ["encode_again", 0]
        graph["refine"]["inputs"]["images"] = ["decode", 0]
        expected = _run(host, test_nodes, graph)["encoded"]
        assert torch.equal(captured["refined"], expected)


def test_level_0_resizes_as_a_bilinear_upscale(host, test_nodes, i2vgen_unet_files):
    """A 32×32 clip refined at 64×64 (same aspect, nothing cropped) is the VAE Encode of ComfyUI's own bilinear
    ImageScale of it (sr600 resizes bilinearly)."""
    graph = refine_prompt(level=0, clip_size=(32, 32), width=64, height=64)
    graph["scale"] = {"class_type": "ImageScale", "inputs": {"image": ["clip", 0], "upscale_method": "bilinear",
                                                             "width": 64, "height": 64, "crop": "disabled"}}
    graph["encode"]["inputs"]["pixels"] = ["scale", 0]
    graph["refine"]["inputs"]["images"] = ["clip", 0]
    captured = _run(host, test_nodes, graph)
    assert captured["refined"].shape == (FRAMES, 4, 8, 8)
    assert torch.allclose(captured["refined"], captured["encoded"], atol=1e-4)


@pytest.mark.parametrize("mode", ["noise (SDEdit)", "DDIM invert"])
@pytest.mark.parametrize("source", ["images", "latent"])
def test_the_refined_clip_has_the_target_size_and_frames(host, test_nodes, i2vgen_unet_files, mode, source):
    captured = _run(host, test_nodes, refine_prompt(source=source, mode=mode, width=64, height=48, frames=4))
    refined = captured["refined"]
    assert refined.shape == (4, 4, 48 // 8, 64 // 8)
    assert refined.isfinite().all() and refined.std() > 1e-3
    assert (refined[0] - refined[-1]).abs().max() > 1e-4


def test_ddim_inversion_then_sampling_back_reconstructs_closer_than_sdedit_noise(host, test_nodes, i2vgen_unet_files):
    """Same model, prompt, sampler (euler = DDIM), steps and level, cfg 1: the inverted start walks back near the
    clip; the seed's noise at that level does not."""
    executor = host.make_executor()

    def error(mode: str) -> float:
        graph = refine_prompt(mode=mode, level=500, steps=8, cfg=1.0, width=48, height=32)
        captured = _run(host, test_nodes, graph, executor)
        return (captured["refined"] - captured["encoded"]).abs().mean().item()

    inverted, noised = error("DDIM invert"), error("noise (SDEdit)")
    assert inverted < 0.1 * noised, (inverted, noised)


@pytest.mark.parametrize("refiner", ["i2vgen", "animatediff"])
def test_ddim_inversion_is_conditioned_on_inversion_text(host, test_nodes, i2vgen_unet_files, motion_files, refiner):
    """sr600 inverts with the empty text: connected, inversion_text (not the positive prompt) conditions the
    inversion – the positive's own text there gives the unconnected result bit for bit, another text another one."""
    executor = host.make_executor()
    motion = motion_files["v3.safetensors"] if refiner == "animatediff" else None

    def refined(text: str | None) -> torch.Tensor:
        graph = refine_prompt(refiner, mode="DDIM invert", level=500, steps=3, cfg=1.0, width=48, height=32,
                              motion_file=motion, inversion_text=text)
        return _run(host, test_nodes, graph, executor)["refined"].clone()

    default = refined(None)
    assert torch.equal(refined("sharp, detailed"), default)
    assert (refined("") - default).abs().max() > 1e-4


def test_an_animatediff_refiner_refines_the_clip(host, test_nodes, i2vgen_unet_files, motion_files):
    graph = refine_prompt("animatediff", motion_file=motion_files["v3.safetensors"], width=64, height=64)
    refined = _run(host, test_nodes, graph)["refined"]
    assert refined.shape == (FRAMES, 4, 8, 8) and refined.isfinite().all()
    base = _run(host, test_nodes, refine_prompt("animatediff", motion_file=motion_files["v3.safetensors"],
                                                width=64, height=64, level=0))["refined"]
    assert (refined - base).abs().max() > 1e-3, "re-sampled from level 700, not returned as it came"


@pytest.mark.parametrize("change, words", [
    ({"source": "both"}, ["exactly one of images", "both are"]),
    ({"source": "none"}, ["exactly one of images", "neither is"]),
    ({"width": 60}, ["width/height", "multiples of 8"]),
    ({"frames": 1}, ["images holds 1 frame", "2 or more"]),
    ({"frames": 1, "source": "latent"}, ["latent holds 1 frame"]),
    ({"clip_vision": False}, ["clip_vision", "ViT-H"]),
    ({"refiner": "sd15"}, ["Apply Motion Model"]),
])
def test_bad_input_is_refused_clearly(host, test_nodes, i2vgen_unet_files, change, words):
    test_nodes.CAPTURED.pop("refined", None)
    result = host.run(refine_prompt(**change))
    assert not result.success and "refined" not in test_nodes.CAPTURED
    message = result.error["exception_message"]
    assert "[I2VGen-XL Refine]" in message and all(word in message for word in words), message


def test_more_than_the_device_holds_is_refused_before_encoding(host, test_nodes, i2vgen_unet_files, monkeypatch):
    import comfy.model_management

    monkeypatch.setattr(comfy.model_management, "get_total_memory", lambda *args, **kwargs: 1 << 10)
    result = host.run(refine_prompt())
    assert not result.success
    message = result.error["exception_message"]
    assert "[I2VGen-XL Refine]" in message and f"{FRAMES} frames at 64×64 needs about" in message, message


@pytest.fixture
def cancel_reset():
    """Clear a Cancel a test pressed, whatever the test's outcome."""
    import comfy.model_management

    yield
    comfy.model_management.interrupt_current_processing(False)


@pytest.mark.parametrize("cancel_at", [2, 6], ids=["during the inversion", "during the sampling"])
def test_cancel_stops_within_a_model_call(host, test_nodes, i2vgen_unet_files, cancel_reset, cancel_at):
    """4 inversion calls then 4 sampling calls (euler, cfg 1): Cancel stops at the next call, nothing comes out."""
    graph = refine_prompt(mode="DDIM invert", steps=4, cfg=1.0, width=48, height=32)
    graph["count"] = {"class_type": "Pix2GifTest_CancelAtModelCall",
                      "inputs": {"model": graph["refine"]["inputs"]["model"], "cancel_at": cancel_at,
                                 "key": "model_calls"}}
    graph["refine"]["inputs"]["model"] = ["count", 0]
    test_nodes.CAPTURED.pop("refined", None)
    result = host.run(graph)
    assert not result.success and result.interrupted
    assert cancel_at <= test_nodes.CAPTURED["model_calls"] <= cancel_at + 1
    assert "refined" not in test_nodes.CAPTURED
