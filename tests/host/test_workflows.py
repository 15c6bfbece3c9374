"""Every bundled workflow runs headless on this host with the tiny models and produces what it promises."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

import workflow

WORKFLOWS = Path(__file__).resolve().parent.parent.parent / "workflows"
GIF_PSNR_BOUND_DB = 24.0  # random-weight frames are noise-like: a hard case for a 256-colour palette


def run_workflow(host, name: str, tmp_path: Path, capture: dict[str, str], latents: dict[str, str] | None = None):
    """Run workflows/<name> with tiny models; ``capture`` (``latents``) maps a capture key to the node id whose IMAGE
    (LATENT) to keep."""
    import folder_paths
    import nodes

    ui = workflow.load(WORKFLOWS / name)
    prompt = workflow.to_prompt(ui, nodes.NODE_CLASS_MAPPINGS)
    workflow.use_tiny_models(prompt, tmp_path / "animatediff_models")
    folder_paths.add_model_folder_path("animatediff_models", str(tmp_path / "animatediff_models"))
    for key, node_id in capture.items():
        prompt[f"capture_{key}"] = {"class_type": "Pix2GifTest_CaptureImage",
                                    "inputs": {"images": [node_id, 0], "key": key}}
    for key, node_id in (latents or {}).items():
        prompt[f"capture_{key}"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                    "inputs": {"samples": [node_id, 0], "key": key}}
    result = host.run(prompt, {"extra_pnginfo": {"workflow": ui}})
    assert result.success, result.error or result.validation_error
    return ui, result


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_animatediff_txt2gif(host, test_nodes, tmp_path):
    import folder_paths

    ui, result = run_workflow(host, "animatediff_txt2gif.json", tmp_path, {"frames": "7"})
    save = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_SaveAnimation")
    fps = save["widgets_values"][2]
    item = result.outputs[str(save["id"])]["images"][0]
    path = Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]
    expected = (test_nodes.CAPTURED["frames"].numpy() * 255).round().clip(0, 255).astype(np.uint8)
    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
        gif.seek(0)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == 16 == expected.shape[0]
    assert abs(sum(durations) / len(durations) - 1000 / fps) <= 5, "frame times follow fps within GIF's 10 ms ticks"
    assert psnr(np.stack(frames), expected) >= GIF_PSNR_BOUND_DB


def test_animatediff_long_clip(host, pack, test_nodes, tmp_path):
    import pytest

    if not pack.nodes.animatediff_injection.hosts_context_windows():
        pytest.skip("needs ComfyUI's working native context windows (v0.33 or later)")
    ui, result = run_workflow(host, "animatediff_long_clip.json", tmp_path, {"frames": "7"})
    item = saved_by(ui, result, "Pix2Gif_SaveAnimation")["images"][0]
    assert item["filename"].endswith(".gif")
    assert test_nodes.CAPTURED["frames"].shape[0] == 64


def assert_gif_starts_with_the_first_frame(ui, result, captured, frames_node: str) -> None:
    """16 decoded frames were saved as a GIF and frame 1 is the decoded first-frame image (VAE batch rounding)."""
    save = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_SaveAnimation")
    assert result.outputs[str(save["id"])]["images"][0]["filename"].endswith(".gif")
    frames, first = captured["frames"].numpy(), captured["first"].numpy()
    assert frames.shape[0] == 16, f"node {frames_node} decodes the 16-frame clip"
    assert np.abs(frames[0] - first[0]).max() <= 1e-4
    assert np.abs(frames[1] - first[0]).max() > 1e-2, "the clip moves away from the first frame"


def test_animatezero_txt2gif(host, test_nodes, tmp_path):
    ui, result = run_workflow(host, "animatezero_txt2gif.json", tmp_path, {"frames": "11", "first": "7"})
    assert_gif_starts_with_the_first_frame(ui, result, test_nodes.CAPTURED, "11")


def test_animatezero_image2gif(host, test_nodes, tmp_path):
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui, result = run_workflow(host, "animatezero_image2gif.json", tmp_path, {"frames": "12", "first": "14"})
    assert_gif_starts_with_the_first_frame(ui, result, test_nodes.CAPTURED, "12")


def saved_by(ui, result, node_type: str) -> dict:
    """The UI output of the (only) node of ``node_type``."""
    return result.outputs[str(next(n["id"] for n in ui["nodes"] if n["type"] == node_type))]


def test_motion_inversion_train(host, tmp_path):
    from pix2gif_core.motion_inversion.embeddings import load_motion_embeddings
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui, result = run_workflow(host, "motion_inversion_train.json", tmp_path, {})
    relative = saved_by(ui, result, "Pix2Gif_SaveMotionEmbeddings")["text"][0]
    assert relative.replace("\\", "/") == "motion_inversion/landscape_zoom_00001.safetensors"
    embeddings = load_motion_embeddings(tmp_path / "motion_embeddings" / relative)
    assert (embeddings.frames, embeddings.pixel_hw, embeddings.motion_module_version) == (16, (64, 64), "v3")
    assert embeddings.metadata["trained_steps"] == str(workflow.TINY_STEPS)
    assert embeddings.metadata["layers_preset"] == "official", "the bundled workflow trains Motion Inversion's layers"
    assert saved_by(ui, result, "Pix2Gif_SaveAnimation")["images"][0]["type"] == "temp", "the reference clip preview"


def test_motion_inversion_apply(host, test_nodes, tmp_path):
    import folder_paths
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui, result = run_workflow(host, "motion_inversion_apply.json", tmp_path, {"frames": "15"})
    item = saved_by(ui, result, "Pix2Gif_SaveAnimation")["images"][0]
    path = Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]
    with Image.open(path) as gif:
        assert gif.n_frames == 16 == test_nodes.CAPTURED["frames"].shape[0]


def test_follow_your_click_model(host, test_nodes, tmp_path):
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui, result = run_workflow(host, "follow_your_click_model.json", tmp_path, {"frames": "8"})
    item = saved_by(ui, result, "Pix2Gif_SaveAnimation")["images"][0]
    assert item["filename"].endswith(".gif")
    frames = test_nodes.CAPTURED["frames"]
    assert frames.shape[0] == 16 and frames.isfinite().all()
    assert (frames[0] - frames[-1]).abs().max() > 1e-3, "the clip moves"


def _node_id(ui, title: str) -> str:
    return str(next(node["id"] for node in ui["nodes"] if node.get("title") == title))


def _gif_frames(item: dict) -> int:
    import folder_paths

    path = Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]
    with Image.open(path) as gif:
        return gif.n_frames


def test_i2vgen_xl_image2video(host, test_nodes, tmp_path):
    """The base stage with the tiny I2VGen-XL UNet, text encoder, CLIP vision and VAE: 16 frames that move."""
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui = workflow.load(WORKFLOWS / "i2vgen_xl_image2video.json")
    ui, result = run_workflow(host, "i2vgen_xl_image2video.json", tmp_path, {"frames": _node_id(ui, "VAE Decode")})
    frames = test_nodes.CAPTURED["frames"]
    assert frames.shape == (16, workflow.TINY_SIZE, workflow.TINY_SIZE, 3) and frames.isfinite().all()
    assert (frames[0] - frames[-1]).abs().max() > 1e-2, "a clip, not one image repeated"
    assert _gif_frames(saved_by(ui, result, "Pix2Gif_SaveAnimation")["images"][0]) == 16


def test_i2vgen_xl_cascade(host, test_nodes, tmp_path):
    """Base stage, then I2VGen-XL Refine at a wider size: both clips 16 frames, the refined one at Refine's size,
    saved as a GIF (the base clip as a temp preview)."""
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    ui = workflow.load(WORKFLOWS / "i2vgen_xl_cascade.json")
    capture = {"base": _node_id(ui, "VAE Decode"), "refined": _node_id(ui, "VAE Decode (refined)")}
    ui, result = run_workflow(host, "i2vgen_xl_cascade.json", tmp_path, capture)
    base, refined = test_nodes.CAPTURED["base"], test_nodes.CAPTURED["refined"]
    assert base.shape == (16, workflow.TINY_SIZE, workflow.TINY_SIZE, 3)
    assert refined.shape == (16, workflow.TINY_SIZE, workflow.TINY_REFINED_WIDTH, 3) and refined.isfinite().all()
    saved = {str(node["id"]): result.outputs[str(node["id"])]["images"][0] for node in ui["nodes"]
             if node["type"] == "Pix2Gif_SaveAnimation"}
    kinds = sorted(item["type"] for item in saved.values())
    assert kinds == ["output", "temp"] and all(_gif_frames(item) == 16 for item in saved.values())


def test_follow_your_click_regional(host, test_nodes, tmp_path):
    """Clicks → tiny SAM mask → AnimateZero + Regional Motion: a 16-frame GIF starting with the photo's first frame,
    whose latents outside the mask (latent cells with none of their 8×8 pixels in it) equal frame 1's."""
    import importlib.util

    import torch
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    # nodes 12/14: the clip and the inverted photo decoded, 19: the mask scaled to the video, 11: the GIF Sampler
    ui, result = run_workflow(host, "follow_your_click_regional.json", tmp_path,
                              {"frames": "12", "first": "14", "mask": "19"}, latents={"latents": "11"})
    assert_gif_starts_with_the_first_frame(ui, result, test_nodes.CAPTURED, "12")
    mask, latents = test_nodes.CAPTURED["mask"][0, ..., 0], test_nodes.CAPTURED["latents"]
    moving = torch.nn.functional.max_pool2d((mask > 0.5).float()[None, None], 8)[0, 0] > 0
    assert moving.any() and (~moving).any(), "the tiny SAM's mask covers part of the image"
    exact = importlib.util.find_spec("comfy.patcher_extension") is not None
    for frame in latents[1:]:
        if exact:
            assert torch.equal(frame[:, ~moving], latents[0][:, ~moving])
        else:
            torch.testing.assert_close(frame[:, ~moving], latents[0][:, ~moving], rtol=0, atol=1e-5)
    assert (latents[1:, :, moving] - latents[0][:, moving]).abs().max() > 1e-2, "the region moves"
    (report,) = result.outputs["23"]["text"]  # Regional Motion Report on the decoded clip
    assert "inside" in report and "outside" in report
