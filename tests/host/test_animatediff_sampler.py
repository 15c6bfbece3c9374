"""The GIF sampler in a real host: progress per step, cancel, start image/latent; SamplerCustom compatibility."""
from __future__ import annotations

import pytest
import torch

from graphs import txt2vid
from progress import assert_complete_bars, recorded_progress

FRAMES = 6


@pytest.fixture
def cancel_reset():
    """Clear a Cancel a test pressed, whatever the test's outcome."""
    import comfy.model_management

    yield
    comfy.model_management.interrupt_current_processing(False)


def counted(prompt: dict, cancel_at: int = 0) -> dict:
    """``prompt`` with its sampler's MODEL counting UNet calls (and pressing Cancel during call ``cancel_at``)."""
    prompt["count"] = {"class_type": "Pix2GifTest_CancelAtModelCall",
                       "inputs": {"model": prompt["sample"]["inputs"]["model"], "cancel_at": cancel_at,
                                  "key": "model_calls"}}
    prompt["sample"]["inputs"]["model"] = ["count", 0]
    return prompt


def test_progress_rises_to_the_last_step(host, motion_files):
    with recorded_progress() as reports:
        result = host.run(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, steps=4))
    assert result.success
    assert_complete_bars(reports, total=4, count=1)


def test_cancel_stops_sampling_within_a_step(host, motion_files, test_nodes, cancel_reset):
    steps = 6
    assert host.run(counted(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, steps=steps))).success
    calls_per_step = test_nodes.CAPTURED["model_calls"] // steps
    cancel_at = 2 * calls_per_step  # during step 2
    test_nodes.CAPTURED.pop("latent", None)
    result = host.run(counted(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, steps=steps), cancel_at))
    assert not result.success and result.interrupted
    assert cancel_at <= test_nodes.CAPTURED["model_calls"] <= cancel_at + calls_per_step, \
        "sampling stops within a step of the cancel"
    assert "latent" not in test_nodes.CAPTURED


def start_prompt(motion_file: str, start: str, frames: int, denoise: float) -> dict:
    prompt = txt2vid(motion_file, frames=FRAMES, denoise=denoise)
    prompt["start_empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64,
                                                                         "batch_size": frames}}
    if start == "latent":
        prompt["sample"]["inputs"]["start_latent"] = ["start_empty", 0]
    else:
        prompt["start_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["start_empty", 0],
                                                                       "vae": ["ckpt", 2]}}
        prompt["sample"]["inputs"]["start_image"] = ["start_decode", 0]
        prompt["sample"]["inputs"]["vae"] = ["ckpt", 2]
    return prompt


@pytest.mark.parametrize("start", ["latent", "image"])
@pytest.mark.parametrize("frames", [1, FRAMES])
def test_start_latent_or_image_is_repeated_or_used(host, test_nodes, motion_files, start, frames):
    result = host.run(start_prompt(motion_files["v3.ckpt"], start, frames, denoise=0.0))
    assert result.success, result.error
    latent = test_nodes.CAPTURED["latent"]
    assert latent.shape == (FRAMES, 4, 8, 8)
    if start == "latent":
        assert torch.equal(latent, torch.zeros_like(latent)), "denoise 0 returns the start latent"


def test_start_clip_of_another_length_is_refused(host, motion_files):
    result = host.run(start_prompt(motion_files["v3.ckpt"], "latent", 4, denoise=0.5))
    assert not result.success
    message = result.error["exception_message"]
    assert "GIF Sampler" in message and "start_latent has 4 frames" in message


def test_start_image_without_vae_is_refused(host, motion_files):
    prompt = start_prompt(motion_files["v3.ckpt"], "image", 1, denoise=0.5)
    del prompt["sample"]["inputs"]["vae"]
    message = host.run(prompt).error["exception_message"]
    assert "GIF Sampler" in message and "VAE" in message


def test_sampler_custom_runs_the_motion_model(host, test_nodes, motion_files):
    plain = host.run(txt2vid(None, frames=FRAMES, sampler="custom"))
    assert plain.success, plain.error
    reference = test_nodes.CAPTURED["latent"]
    identity = host.run(txt2vid(motion_files["v3.zero"], frames=FRAMES, sampler="custom"))
    assert identity.success and torch.equal(test_nodes.CAPTURED["latent"], reference)
    moving = host.run(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, sampler="custom"))
    assert moving.success and not torch.allclose(test_nodes.CAPTURED["latent"], reference)
