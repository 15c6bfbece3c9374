"""The Save Animation node in a real host: every format, metadata, preview convention, bad prefixes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from graphs import txt2vid

FRAMES = 6


def save_inputs(**overrides) -> dict:
    inputs = {"filename_prefix": "tests/clip", "format": "gif", "fps": 8.0, "loop_count": 0, "pingpong": False,
              "save_output": True, "gif_dither": "ordered", "webp_quality": 90, "mp4_crf": 19}
    inputs.update(overrides)
    return inputs


def saved_file(result) -> Path:
    import folder_paths

    assert result.success, result.error or result.validation_error
    ui = result.outputs["save"]
    assert list(ui["animated"]) == [True]
    item = ui["images"][0]
    return Path(folder_paths.get_directory_by_type(item["type"])) / item["subfolder"] / item["filename"]


def decoded_frames(path: Path) -> int:
    if path.suffix == ".mp4":
        import av

        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    with Image.open(path) as image:
        return sum(1 for _ in ImageSequence.Iterator(image))


@pytest.mark.parametrize("fmt,suffix", [("gif", ".gif"), ("webp", ".webp"), ("apng", ".png"), ("mp4", ".mp4")])
def test_each_format_is_written_with_all_frames(host, motion_files, fmt, suffix):
    path = saved_file(host.run(txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs(format=fmt))))
    assert path.suffix == suffix and decoded_frames(path) == FRAMES


def test_each_run_writes_a_new_file(host, motion_files):
    prompt = txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs(filename_prefix="tests/runs"))
    first, second = saved_file(host.run(prompt)), saved_file(host.run(prompt))
    assert first != second and first.exists() and second.exists()


def test_a_gif_has_a_first_frame_png_that_carries_the_workflow(host, motion_files, test_nodes):
    """ComfyUI's front end reads workflows from PNG, WebP and MP4, not GIF: the companion PNG brings the graph back."""
    workflow = {"nodes": [], "links": [], "note": "drag me back in"}
    prompt = txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs())
    result = host.run(prompt, {"extra_pnginfo": {"workflow": workflow}})
    gif = saved_file(result)
    companion = result.outputs["save"]["workflow_png"][0]
    assert companion["filename"] == gif.with_suffix(".png").name
    with Image.open(gif.with_suffix(".png")) as still:
        assert json.loads(still.info["workflow"]) == workflow
        assert json.loads(still.info["prompt"])["save"]["class_type"] == "Pix2Gif_SaveAnimation"
        first = (test_nodes.CAPTURED["frames"][0].numpy() * 255).round().clip(0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(still.convert("RGB")), first)
    off = txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save={**save_inputs(), "workflow_png": False})
    gif_off = saved_file(result_off := host.run(off, {"extra_pnginfo": {"workflow": workflow}}))
    assert not gif_off.with_suffix(".png").exists() and result_off.outputs["save"]["workflow_png"] == []


def test_gif_timing_loop_pingpong_and_workflow_metadata(host, motion_files):
    workflow = {"nodes": [], "links": [], "note": "drag me back in"}
    prompt = txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs(fps=10.0, loop_count=3, pingpong=True))
    path = saved_file(host.run(prompt, {"extra_pnginfo": {"workflow": workflow}}))
    with Image.open(path) as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
        assert gif.info["loop"] == 2  # NETSCAPE counts repeats after the first play: 3 plays
        metadata = json.loads(gif.info["comment"])
    assert len(durations) == 2 * FRAMES - 2 and all(d == 100 for d in durations)
    assert json.loads(metadata["workflow"]) == workflow
    assert json.loads(metadata["prompt"])["save"]["class_type"] == "Pix2Gif_SaveAnimation"


def test_preview_only_goes_to_the_temp_folder(host, motion_files):
    import folder_paths

    path = saved_file(host.run(txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs(save_output=False))))
    assert Path(folder_paths.get_temp_directory()) in path.parents


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/absolute", "a/../../escape"])
def test_prefix_outside_the_output_folder_is_refused_and_nothing_is_written(host, motion_files, prefix):
    import folder_paths

    output = Path(folder_paths.get_output_directory())
    before = {p for p in output.parent.rglob("*") if p.is_file()}
    result = host.run(txt2vid(motion_files["v3.ckpt"], frames=FRAMES, save=save_inputs(filename_prefix=prefix)))
    assert not result.success
    assert "filename_prefix" in result.error["exception_message"]
    assert {p for p in output.parent.rglob("*") if p.is_file()} == before


def test_frames_in_the_file_match_the_decoded_frames(host, test_nodes, motion_files):
    path = saved_file(host.run(txt2vid(motion_files["v3.ckpt"], frames=FRAMES,
                                       save=save_inputs(format="apng"))))
    expected = (test_nodes.CAPTURED["frames"].numpy() * 255).round().clip(0, 255).astype(np.uint8)
    with Image.open(path) as apng:
        frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(apng)]
    assert np.array_equal(np.stack(frames), expected)


def test_the_front_end_extension_is_registered_once(host, pack):
    """One web folder for the pack (WEB_DIRECTORY), however its folder is named; pyproject declares none."""
    import os

    import nodes

    ours = [path for path in nodes.EXTENSION_WEB_DIRS.values()
            if os.path.realpath(path) == os.path.realpath(os.path.join(os.path.dirname(pack.__file__), "js"))]
    assert len(ours) == 1, nodes.EXTENSION_WEB_DIRS
    import tomllib

    with open(os.path.join(os.path.dirname(pack.__file__), "pyproject.toml"), "rb") as f:
        comfy_table = tomllib.load(f)["tool"]["comfy"]
    assert "web" not in comfy_table, "ComfyUI would register js/ a second time under the project's name"
