"""The GIF sampler in a real host: progress per step, cancel, start image/latent; SamplerCustom compatibility."""
from __future__ import annotations

import pytest
import torch

from graphs import txt2vid

FRAMES = 6


@pytest.fixture
def progress_hook():
    """Record every progress update the host's ProgressBar reports; ``cancel_at`` interrupts at that value."""
    import comfy.model_management
    import comfy.utils

    calls = []
    state = {"cancel_at": None}

    def hook(value, total, preview=None, node_id=None):
        calls.append((value, total))
        if value == state["cancel_at"]:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    yield calls, state
    comfy.utils.set_progress_bar_global_hook(None)
    comfy.model_management.interrupt_current_processing(False)


def test_progress_is_reported_once_per_step(host, motion_files, progress_hook):
    calls, _ = progress_hook
    result = host.run(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, steps=4))
    assert result.success
    assert [value for value, total in calls if total == 4] == [1, 2, 3, 4]


def test_cancel_stops_sampling_cleanly(host, motion_files, progress_hook, test_nodes):
    calls, state = progress_hook
    state["cancel_at"] = 2
    test_nodes.CAPTURED.pop("latent", None)
    result = host.run(txt2vid(motion_files["v2.ckpt"], frames=FRAMES, steps=6))
    assert not result.success and result.interrupted
    assert max(value for value, _ in calls) <= 3, "sampling must stop within a step of the cancel"
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
