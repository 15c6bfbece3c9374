"""Every bundled workflow opened in the real front end: no missing node type, each saved widget value on the
widget of its name (named by the host's own node definitions), no two nodes overlapping as the page lays them
out, no console error or warning from the pack. A screenshot per workflow under .comfy-ci/reports/browser-<host>/."""
from __future__ import annotations

import json
import math

import pytest
from conftest import WORKFLOWS_DIR
from comfy_page import overlapping
from node_definitions import widget_names

WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))
#: nodes of the front end alone (no definition on the server) and their widgets in saved order
FRONT_END_NODES = {"Note": ["text"], "MarkdownNote": ["text"]}
PACK_PREFIX = "Pix2Gif_"


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, abs_tol=1e-6)
    return a == b


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_bundled_workflow_opens_as_saved(comfy, object_info, path):
    saved = json.loads(path.read_text())
    seen = len(comfy.console)
    comfy.load_workflow(saved)
    comfy.screenshot(f"workflow-{path.stem}")
    shown = {node["id"]: node for node in comfy.nodes()}

    assert sorted(shown) == sorted(str(node["id"]) for node in saved["nodes"])
    missing = [(n["id"], n["type"]) for n in shown.values()
               if not n["registered"] or (n["type"] not in object_info and n["type"] not in FRONT_END_NODES)]
    assert not missing, f"node types the front end does not know: {missing}"

    for node in saved["nodes"]:
        names = FRONT_END_NODES.get(node["type"]) or widget_names(object_info[node["type"]])
        values = node.get("widgets_values", [])
        if len(values) > len(names) and not node["type"].startswith(PACK_PREFIX):
            continue  # a ComfyUI node saved from a newer ComfyUI (the long-clip workflow needs v0.33)
        # fewer values than widgets: saved before the trailing optional widgets existed (they take their defaults)
        assert len(values) <= len(names), f"node {node['id']} {node['type']}: {len(values)} saved values, {names}"
        on_page = dict(shown[str(node["id"])]["widgets"])
        for name, value in zip(names, values):
            if name is not None:
                assert name in on_page and same(on_page[name], value), \
                    f"node {node['id']} {node['type']}: widget {name} shows {on_page.get(name)!r}, saved {value!r}"

    assert not overlapping(list(shown.values()), comfy.title_height())
    assert not comfy.our_problems(since=seen)
