"""workflows/motion_preview.json run from the page, in each format Save Animation writes: the node plays the saved
file (its <img> or <video> holds it and shows more than one distinct frame over time), its info line gives the
format, frame count, fps, size and name of the file as the file itself has them, Measure Motion shows its text
result, nothing of this is saved into the workflow, and dropping the output (GIF: its workflow PNG) onto the
canvas brings the graph back; a GIF dropped itself (no workflow in it) gets the front end's own handling (a
message, or a Load Image node with the file), never an exception from the pack."""
from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request

import pytest
from comfy_page import drop_file, overlapping, saved_graph
from conftest import WORKFLOWS_DIR
from node_definitions import widget_names
from PIL import Image, ImageSequence

RUN_TIMEOUT_MS = 240_000
SAVE, MEASURE = "3", "4"  # node ids in motion_preview.json
MIME = {"gif": "image/gif", "webp": "image/webp", "apng": "image/png", "mp4": "video/mp4", "png": "image/png"}

PREVIEW_JS = """(id) => {
  const node = app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id);
  const box = node.widgets?.find((w) => w.name === "pix2gif_preview")?.element;
  const media = box?.querySelector("img, video");
  return media && {tag: media.tagName.toLowerCase(), src: media.currentSrc || media.src,
                   ready: media.tagName === "IMG" ? media.complete && media.naturalWidth > 0 : media.readyState >= 2,
                   time: media.currentTime ?? null, info: box.querySelector(".pix2gif-info").textContent};
}"""
TEXT_JS = """(id) => {
  const node = app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id);
  return node.widgets?.find((w) => w.name === "pix2gif_text")?.element.value ?? null;
}"""


def fetch(server, item: dict) -> bytes:
    query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as response:
        return response.read()


def history(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/history", timeout=60) as response:
        return json.load(response)


def run_from_page(comfy, server, format: str) -> dict:
    """Open motion_preview.json, choose ``format`` in Save Animation and queue it as the Queue button does;
    returns the finished prompt's outputs from the server's history."""
    runs_before = len(history(server))
    workflow = json.loads((WORKFLOWS_DIR / "motion_preview.json").read_text())
    comfy.load_workflow(workflow)
    comfy.page.evaluate("""(format) => {
      const node = app.graph.getNodeById(3) ?? app.graph.getNodeById("3");
      const widget = node.widgets.find((w) => w.name === "format");
      widget.value = format;
      widget.callback?.(format);
    }""", format)
    comfy.page.evaluate("() => app.queuePrompt(0, 1)")
    comfy.page.wait_for_function(f"() => ({PREVIEW_JS})('{SAVE}')?.ready", timeout=RUN_TIMEOUT_MS)
    for _ in range(RUN_TIMEOUT_MS // 500):
        runs = history(server)
        if len(runs) > runs_before:
            return list(runs.values())[-1]["outputs"]
        comfy.page.wait_for_timeout(500)
    raise TimeoutError("the prompt never reached the server's history")


def distinct_frames_shown(comfy, samples: int = 8, interval_ms: int = 120) -> int:
    element = comfy.page.locator(".pix2gif-info").first.locator("xpath=..").locator("img, video")
    shots = set()
    for _ in range(samples):
        shots.add(element.screenshot())
        comfy.page.wait_for_timeout(interval_ms)
    return len(shots)


def file_facts(data: bytes, format: str) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) read from the file itself (PIL; PyAV for MP4)."""
    if format == "mp4":
        import av

        with av.open(io.BytesIO(data)) as container:
            frames = [frame for frame in container.decode(video=0)]
        return len(frames), (frames[0].width, frames[0].height)
    with Image.open(io.BytesIO(data)) as image:
        return sum(1 for _ in ImageSequence.Iterator(image)), image.size


@pytest.mark.parametrize("format", ["gif", "webp", "apng", "mp4"])
def test_run_plays_in_the_node_and_the_output_restores_the_graph(comfy, server, object_info, format):
    seen = len(comfy.console)
    outputs = run_from_page(comfy, server, format)
    ran = saved_graph(comfy)
    (clip,) = outputs[SAVE]["images"]
    shown = comfy.page.evaluate(PREVIEW_JS, SAVE)
    comfy.screenshot(f"motion_preview-{format}-finished")

    assert shown["tag"] == ("video" if format == "mp4" else "img")
    assert urllib.parse.parse_qs(urllib.parse.urlparse(shown["src"]).query)["filename"] == [clip["filename"]]
    assert distinct_frames_shown(comfy) > 1, "the node shows a still picture, not the animation"
    assert not overlapping(comfy.nodes(), comfy.title_height()), "the preview pushed its node over another"

    data = fetch(server, clip)
    frames, (width, height) = file_facts(data, format)
    fps = ran[SAVE][1][2]
    assert shown["info"] == f"{format.upper()} · {frames} frames · {fps} fps · {width}×{height} · {clip['filename']}"
    assert comfy.page.evaluate(TEXT_JS, MEASURE) == "\n".join(outputs[MEASURE]["text"])

    for node_id, (node_type, values) in ran.items():  # what the page saves: the node's own widgets, nothing added
        if node_type in object_info:
            assert len(values) == len(widget_names(object_info[node_type])), (node_id, node_type, values)
    prompt = comfy.page.evaluate("async () => (await app.graphToPrompt()).output")
    assert "pix2gif_preview" not in prompt[SAVE]["inputs"] and "pix2gif_text" not in prompt[MEASURE]["inputs"]

    carrier = outputs[SAVE]["workflow_png"][0] if format == "gif" else clip
    comfy.page.evaluate("() => app.graph.clear()")
    query = urllib.parse.urlencode({k: carrier[k] for k in ("filename", "subfolder", "type")})
    drop_file(comfy, f"{server.url}/view?{query}", carrier["filename"], MIME[carrier["filename"].rsplit(".", 1)[1]
                                                                              if format == "gif" else format])
    assert saved_graph(comfy) == ran
    assert not comfy.our_problems(since=seen), [line.text[:300] for line in comfy.our_problems(since=seen)]


def test_gif_without_workflow_dropped_gets_the_front_ends_message(comfy, server):
    seen = len(comfy.console)
    outputs = run_from_page(comfy, server, "gif")
    before = saved_graph(comfy)
    (clip,) = outputs[SAVE]["images"]
    query = urllib.parse.urlencode({k: clip[k] for k in ("filename", "subfolder", "type")})
    drop_file(comfy, f"{server.url}/view?{query}", clip["filename"], "image/gif")
    comfy.screenshot("gif-dropped")
    after = saved_graph(comfy)
    assert {node_id: after[node_id] for node_id in before} == before
    # front end 1.32 says "Unable to find workflow in <file>"; 1.49 adds a Load Image node holding the dropped file
    added = [after[node_id] for node_id in after if node_id not in before]
    assert all(node_type == "LoadImage" and values[0] == clip["filename"] for node_type, values in added), added
    assert not [line for line in comfy.console[seen:] if line.kind == "pageerror"]
    assert not comfy.our_problems(since=seen), [line.text[:300] for line in comfy.our_problems(since=seen)]
