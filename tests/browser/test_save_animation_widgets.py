"""Save Animation shows the widgets of the chosen format only (GIF: dither and workflow PNG; WebP: quality; MP4:
CRF; APNG: none), drawn without gaps; hidden widgets keep their value, their place in the saved workflow and their
input in the API prompt; a workflow saved by an older version of the pack still opens with every value in place."""
from __future__ import annotations

import json

import pytest
from comfy_page import saved_graph
from conftest import WORKFLOWS_DIR
from node_definitions import widget_names

SAVE = "3"  # Save Animation in motion_preview.json
ONLY_FOR = {"gif": {"gif_dither", "workflow_png"}, "webp": {"webp_quality"}, "apng": set(), "mp4": {"mp4_crf"}}

WIDGETS_JS = """(id) => {
  const node = app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id);
  return node.widgets.map((w) => ({name: w.name, value: w.value, y: w.y, height: w.computedHeight ?? null,
                                   shown: node.isWidgetVisible ? node.isWidgetVisible(w) : !w.hidden}));
}"""
CHOOSE_JS = """([id, format]) => {
  const node = app.graph.getNodeById(Number(id)) ?? app.graph.getNodeById(id);
  const widget = node.widgets.find((w) => w.name === "format");
  widget.value = format;
  widget.callback?.(format);
}"""


def motion_preview() -> dict:
    return json.loads((WORKFLOWS_DIR / "motion_preview.json").read_text())


def save_animation_widgets(comfy) -> list[dict]:
    comfy.page.wait_for_timeout(300)  # a frame drawn: widgets laid out
    return comfy.page.evaluate(WIDGETS_JS, SAVE)


@pytest.mark.parametrize("format", ["gif", "webp", "apng", "mp4"])
def test_only_the_chosen_formats_widgets_are_shown(comfy, object_info, format):
    comfy.load_workflow(motion_preview())
    comfy.page.evaluate(CHOOSE_JS, [SAVE, format])
    widgets = [w for w in save_animation_widgets(comfy) if w["name"] in widget_names(object_info[
        "Pix2Gif_SaveAnimation"])]
    specific = set().union(*ONLY_FOR.values())
    assert {w["name"] for w in widgets if w["shown"]} == \
        {w["name"] for w in widgets if w["name"] not in specific} | ONLY_FOR[format]
    shown = sorted((w for w in widgets if w["shown"]), key=lambda w: w["y"])
    rows = [b["y"] - a["y"] for a, b in zip(shown, shown[1:])]
    assert max(rows) < 1.5 * min(rows), f"a gap where a hidden widget is: {rows}"
    comfy.screenshot(f"save_animation-{format}-widgets")

    prompt = comfy.page.evaluate("async () => (await app.graphToPrompt()).output")
    values = {w["name"]: w["value"] for w in widgets}
    assert {name: prompt[SAVE]["inputs"][name] for name in values} == values


def test_a_workflow_from_an_older_version_keeps_every_value(comfy, object_info):
    """Saved before `workflow_png` existed (nine values), with settings of the formats it does not use."""
    older = motion_preview()
    node = next(n for n in older["nodes"] if str(n["id"]) == SAVE)
    node["widgets_values"] = ["old/prefix", "webp", 15.0, 3, False, True, "ordered", 77, 23]
    comfy.load_workflow(older)
    names = widget_names(object_info["Pix2Gif_SaveAnimation"])
    on_page = {w["name"]: w["value"] for w in save_animation_widgets(comfy)}
    assert [on_page[name] for name in names[:9]] == node["widgets_values"]
    assert on_page[names[9]] is True  # the newer optional widget at its default
    assert saved_graph(comfy)[SAVE][1] == node["widgets_values"] + [True]
    prompt = comfy.page.evaluate("async () => (await app.graphToPrompt()).output")
    assert [prompt[SAVE]["inputs"][name] for name in names] == node["widgets_values"] + [True]
