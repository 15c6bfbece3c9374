"""The three Pix2Gif workflows run headless on this host (tiny models where a model is needed, the bundled sample
image as input) and write what they promise; the preview's measured motion grows with the requested magnitude."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import workflow

WORKFLOWS = Path(__file__).resolve().parent.parent.parent / "workflows"


@pytest.fixture(scope="module")
def bundled(host, tmp_path_factory):
    """Runs a bundled workflow with its inputs installed; ``changes`` overrides node inputs by node id."""
    import folder_paths
    import nodes
    import run_workflow

    run_workflow.install_workflow_assets()
    models = tmp_path_factory.mktemp("models")
    folder_paths.add_model_folder_path("animatediff_models", str(models / "animatediff_models"))

    def run(name: str, changes: dict[str, dict] | None = None):
        ui = workflow.load(WORKFLOWS / name)
        prompt = workflow.to_prompt(ui, nodes.NODE_CLASS_MAPPINGS)
        workflow.use_tiny_models(prompt, models / "animatediff_models")
        for node_id, inputs in (changes or {}).items():
            prompt[node_id]["inputs"].update(inputs)
        result = host.run(prompt, {"extra_pnginfo": {"workflow": ui}})
        assert result.success, result.error or result.validation_error
        return ui, result

    return run


def saved_animation(ui: dict, result) -> tuple[np.ndarray, list[int]]:
    """Frames (F, H, W, 3) uint8 and durations (ms) of the file the workflow's Save Animation node wrote."""
    import folder_paths

    save = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_SaveAnimation")
    item = result.outputs[str(save["id"])]["images"][0]
    path = Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]
    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
        gif.seek(0)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    return np.stack(frames), durations


def measured_text(ui: dict, result) -> str:
    measure = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_MeasureMotion")
    return result.outputs[str(measure["id"])]["text"][0]


def test_motion_preview_gif_motion_grows_with_the_requested_magnitude(bundled, pack):
    measure_motion = pack.pix2gif_core.metrics.motion_magnitude.measure_motion
    ui, result = bundled("motion_preview.json")
    frames, durations = saved_animation(ui, result)
    assert frames.shape == (30, 512, 512, 3)  # 16 frames ping-ponged
    assert abs(sum(durations) / len(durations) - 1000 / 12) <= 5, "12 fps in GIF's 10 ms ticks"
    preview = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_MotionPreview")
    shipped = preview["widgets_values"][1]
    clips = {}
    for magnitude in (shipped / 4, shipped / 2):
        frames_at, _ = saved_animation(*bundled("motion_preview.json", {str(preview["id"]): {"magnitude": magnitude}}))
        clips[magnitude] = measure_motion(torch.from_numpy(frames_at[:16]).float() / 255).clip
    clips[shipped] = measure_motion(torch.from_numpy(frames[:16]).float() / 255).clip
    low, mid, high = (clips[m] for m in sorted(clips))
    assert 0 < low < mid < high
    assert 1.6 < high / mid < 2.4 and 1.6 < mid / low < 2.4, clips
    from_node = float(measured_text(ui, result).split()[1])
    assert abs(from_node - high) <= 0.1 * high, "the GIF keeps the motion the node measured on the frames"


def test_pix2gif_checkpoint_workflow_gives_one_frame_per_magnitude_at_the_image_size(bundled):
    ui, result = bundled("pix2gif_checkpoint.json")
    sampler = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_Pix2GifSampler")
    magnitudes = sampler["widgets_values"][1].split(",")
    frames, durations = saved_animation(ui, result)
    assert frames.shape == (len(magnitudes), 512, 512, 3) and set(durations) == {250}
    per_frame = measured_text(ui, result).split("per frame: ")[1].split(", ")
    assert len(per_frame) == len(magnitudes)


def test_warp_then_refine_workflow_refines_the_warped_clip(bundled):
    ui, result = bundled("warp_then_refine.json")
    warp = next(n for n in ui["nodes"] if n["type"] == "Pix2Gif_WarpLatent")
    frames, _ = saved_animation(ui, result)
    assert frames.shape == (warp["widgets_values"][3], workflow.TINY_SIZE, workflow.TINY_SIZE, 3)
    assert len({frame.tobytes() for frame in frames}) == frames.shape[0], "every frame differs"
