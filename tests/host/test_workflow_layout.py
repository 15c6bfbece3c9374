"""The bundled workflows as a person opens them, checked from the files alone (no browser, no host): nodes that do
not overlap at the size the front end draws them, flow from left to right, groups, a Note, downloadable models
named on their loaders, GIFs saved with the encoder settings the benchmarks found best."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent.parent / "workflows").glob("*.json"))
TITLE_HEIGHT = 30
LOADERS_OF_PUBLIC_FILES = {"CheckpointLoaderSimple": "checkpoints", "Pix2Gif_LoadMotionModel": "animatediff_models"}


def drawn_rectangle(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a node as the front end draws it: at least its saved size, wide enough for its
    title, tall enough for a row per socket (20 px) and per widget (22 px), plus the title bar."""
    rows = max(len(node.get("inputs") or []), len(node.get("outputs") or []))
    widgets = node.get("widgets_values")
    needed = 20 * rows + 22 * (len(widgets) if isinstance(widgets, list) else 0)
    title = node.get("title") or node["type"]
    width = max(node["size"][0], 8 * len(title) + 40)
    height = max(node["size"][1], needed) + TITLE_HEIGHT
    x, y = node["pos"][0], node["pos"][1] - TITLE_HEIGHT
    return x, y, x + width, y + height


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.fixture(params=WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def workflow(request) -> dict:
    with open(request.param) as f:
        return json.load(f)


def test_no_two_nodes_overlap(workflow):
    rectangles = {node["id"]: drawn_rectangle(node) for node in workflow["nodes"]}
    clashes = [(a, b) for a in rectangles for b in rectangles if a < b and overlap(rectangles[a], rectangles[b])]
    assert not clashes


def test_links_run_left_to_right(workflow):
    x = {node["id"]: node["pos"][0] for node in workflow["nodes"]}
    assert all(x[source] < x[target] for _, source, _, target, _, _ in workflow["links"])


def test_every_node_sits_in_a_group_and_a_note_explains(workflow):
    notes = [node for node in workflow["nodes"] if node["type"] in ("Note", "MarkdownNote")]
    assert notes and all(len(note["widgets_values"][0]) > 80 for note in notes)
    groups = [group["bounding"] for group in workflow["groups"]]
    assert groups and all(group.get("title") for group in workflow["groups"])
    for node in workflow["nodes"]:
        if node in notes:
            continue
        left, top, right, bottom = drawn_rectangle(node)
        assert any(gx <= left and gy <= top and right <= gx + gw and bottom <= gy + gh
                   for gx, gy, gw, gh in groups), f"node {node['id']} ({node['type']}) is in no group"


def test_loaders_of_public_files_name_their_download(workflow):
    for node in workflow["nodes"]:
        if node["type"] in LOADERS_OF_PUBLIC_FILES:
            models = node.get("properties", {}).get("models")
            assert models and models[0]["name"] == node["widgets_values"][0], node["id"]
            assert models[0]["directory"] == LOADERS_OF_PUBLIC_FILES[node["type"]]
            assert models[0]["url"].startswith("https://huggingface.co/") and \
                models[0]["url"].endswith("/" + models[0]["name"])


def test_gifs_are_saved_undithered(workflow):
    """`none` beat `ordered` on every benchmark clip (tests/benchmarks/RESULTS.md): −2.2 to −4.9 dB at more bytes."""
    for node in workflow["nodes"]:
        if node["type"] == "Pix2Gif_SaveAnimation":
            assert node["widgets_values"][6] == "none", node["id"]
