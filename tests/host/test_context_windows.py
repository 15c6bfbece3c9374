"""Clips longer than the motion modules' position encoding: ComfyUI's own context windows (``Context Windows
(Manual)``, ComfyUI ≥ v0.3.5x) on a motion-patched MODEL, and clear errors where a clip cannot be sampled."""
from __future__ import annotations

import pytest
import torch

import workflow
from graphs import txt2vid

LONG = 64
WINDOW = 16


@pytest.fixture
def context_windows(pack):
    """Skip unless this ComfyUI's context windows work on a batch of frames (v0.33; v0.3.75's fail, see the pack)."""
    if not pack.nodes.animatediff_injection.hosts_context_windows():
        pytest.skip("this ComfyUI has no working native context windows (v0.3.75's fail on a batch of frames)")


def windowed(prompt: dict, context_length: int = WINDOW, after: str = "apply_mm") -> dict:
    """``prompt`` with ComfyUI's context-window node between ``after`` and the sampler, and a UNet-call counter."""
    prompt["context"] = {"class_type": "ContextWindowsManual",
                         "inputs": {"model": [after, 0], "context_length": context_length, "context_overlap": 4,
                                    "context_schedule": "standard_static", "context_stride": 1,
                                    "closed_loop": False, "fuse_method": "pyramid", "dim": 0, "freenoise": False,
                                    "cond_retain_index_list": "", "split_conds_to_windows": False,
                                    "latent_retain_index_list": "", "causal_window_fix": True}}
    prompt["count"] = {"class_type": "Pix2GifTest_CancelAtModelCall",
                       "inputs": {"model": ["context", 0], "cancel_at": 0, "key": "model_calls"}}
    prompt["sample"]["inputs"]["model"] = ["count", 0]
    return prompt


def error_of(host, prompt: dict) -> str:
    result = host.run(prompt)
    assert not result.success, "the prompt must be refused"
    return result.error["exception_message"]


def test_a_64_frame_clip_samples_in_windows(context_windows, host, test_nodes, motion_files):
    result = host.run(windowed(txt2vid(motion_files["v2.ckpt"], frames=LONG, steps=1)))
    assert result.success, result.error
    latent = test_nodes.CAPTURED["latent"]
    assert latent.shape == (LONG, 4, 8, 8) and torch.isfinite(latent).all()
    assert test_nodes.CAPTURED["model_calls"] >= LONG // WINDOW, "one UNet call per window, not one for the clip"


def test_more_frames_than_positions_name_the_fix(host, pack, motion_files):
    message = error_of(host, txt2vid(motion_files["v2.ckpt"], frames=40, steps=1))
    assert "Apply Motion Model" in message and "40 frames" in message and "32 positions" in message
    working = pack.nodes.animatediff_injection.hosts_context_windows()
    assert ("add ComfyUI's 'Context Windows (Manual)'" if working else "update ComfyUI (v0.33 or later)") in message


def test_a_window_longer_than_the_positions_names_context_length(context_windows, host, motion_files):
    message = error_of(host, windowed(txt2vid(motion_files["v2.ckpt"], frames=LONG, steps=1), context_length=32))
    assert "Context Windows (Manual)" in message and "33 frames" in message and "context_length to at most 31" \
        in message


def test_animatezero_refuses_context_windows(context_windows, host, motion_files):
    prompt = txt2vid(motion_files["v2.ckpt"], frames=LONG, steps=1)
    prompt["animatezero"] = {"class_type": "Pix2Gif_AnimateZero",
                             "inputs": {"model": ["apply_mm", 0], "pin_first_frame": False, "kv_sharing": "replace",
                                        "kv_blocks": "all", "kv_start_percent": 0.0, "kv_end_percent": 1.0,
                                        "window_attention": True, "window_length": 0, "window_blocks": "down",
                                        "kv_source": "video pass"}}
    message = error_of(host, windowed(prompt, after="animatezero"))
    assert "AnimateZero" in message and "context windows" in message and "first frame" in message


def test_motion_embeddings_apply_to_every_window(context_windows, host, test_nodes, motion_files, tmp_path):
    """Embeddings trained on 16 frames act in each window as on a 16-frame clip (like the position encoding)."""
    from pix2gif_core.motion_inversion.embeddings import save_motion_embeddings

    workflow.use_embeddings_folder(tmp_path)
    save_motion_embeddings(workflow.tiny_motion_embeddings(frames=WINDOW, scale=0.5), tmp_path / "long.safetensors")
    save_motion_embeddings(workflow.tiny_motion_embeddings(frames=WINDOW, scale=0.0), tmp_path / "zero.safetensors")

    def clip(embeddings: str) -> torch.Tensor:
        prompt = txt2vid(motion_files["v3.safetensors"], frames=LONG, steps=1)
        prompt["load_emb"] = {"class_type": "Pix2Gif_LoadMotionEmbeddings", "inputs": {"embeddings_name": embeddings}}
        prompt["apply_emb"] = {"class_type": "Pix2Gif_ApplyMotionEmbeddings",
                               "inputs": {"model": ["apply_mm", 0], "motion_embeddings": ["load_emb", 0],
                                          "mode": "as_trained", "strength": 1.0, "resolution": "interpolate"}}
        result = host.run(windowed(prompt, after="apply_emb"))
        assert result.success, result.error
        return test_nodes.CAPTURED["latent"]

    moved, still = clip("long.safetensors"), clip("zero.safetensors")
    assert moved.shape == still.shape == (LONG, 4, 8, 8) and torch.isfinite(moved).all()
    assert not torch.allclose(moved, still), "the embeddings act inside the windows"
    windowed_plain = host.run(windowed(txt2vid(motion_files["v3.safetensors"], frames=LONG, steps=1)))
    assert windowed_plain.success and torch.equal(test_nodes.CAPTURED["latent"], still), \
        "zero embeddings leave windowed AnimateDiff unchanged"
