"""Every bundled workflow runs headless on this host with the tiny models and produces what it promises."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

import workflow

WORKFLOWS = Path(__file__).resolve().parent.parent.parent / "workflows"
GIF_PSNR_BOUND_DB = 24.0  # random-weight frames are noise-like: a hard case for a 256-colour palette


def run_workflow(host, name: str, tmp_path: Path, capture: dict[str, str]):
    """Run workflows/<name> with tiny models; ``capture`` maps a capture key to the node id whose IMAGE to keep."""
    import folder_paths
    import nodes

    ui = workflow.load(WORKFLOWS / name)
    prompt = workflow.to_prompt(ui, nodes.NODE_CLASS_MAPPINGS)
    workflow.use_tiny_models(prompt, tmp_path / "animatediff_models")
    folder_paths.add_model_folder_path("animatediff_models", str(tmp_path / "animatediff_models"))
    for key, node_id in capture.items():
        prompt[f"capture_{key}"] = {"class_type": "Pix2GifTest_CaptureImage",
                                    "inputs": {"images": [node_id, 0], "key": key}}
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
