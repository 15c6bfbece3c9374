"""Click Mask's click picker in the real front end, driven by the mouse: clicks on the node's image (a Load Image's
picture, 400×240, shown at whatever size the node gives it) land in the `points` widget – and so in the saved
workflow and the prompt the page queues – at the image pixel under the pointer, computed here from the image's
on-screen rectangle and the file's size; shift- and right-clicks are background points (label 0), a drag moves a
point, a right-click on a point removes it, a zoom of the canvas changes nothing in that mapping, Clear empties the
list. Queued with a tiny random SAM, the node then shows the preview the server wrote (the mask over the image).
The picture is coloured blocks, so a screenshot says which block is under each click: the rectangle the test
computes from is the image as drawn. No console error from the pack; screenshots under .comfy-ci/reports/."""
from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request

import numpy as np
import pytest
from node_definitions import widget_names
from PIL import Image
from workflow import _fixture

PICTURE = "pix2gif_click_blocks.png"
WIDTH, HEIGHT, BLOCK = 400, 240, 40  # 10 × 6 blocks of one colour each
LOAD, SAM, CLICK, AS_IMAGE, PREVIEW = 1, 2, 3, 4, 5  # node ids
RUN_TIMEOUT_MS = 120_000
#: a press this close to a block's edge (in image pixels) may show either block's colour on screen
EDGE_MARGIN = 4

CANVAS = ".pix2gif-click-canvas"
PROMPT_JS = f"""async () => (await app.graphToPrompt()).output["{CLICK}"].inputs.points"""


def block_colour(i: int, j: int) -> tuple[int, int, int]:
    return 15 + 25 * i, 20 + 40 * j, 128


def block_picture() -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    i, j = x // BLOCK, y // BLOCK
    return np.stack([15 + 25 * i, 20 + 40 * j, np.full_like(i, 128)], axis=-1).astype(np.uint8)


def node(node_id, node_type, pos, size, widgets, inputs=(), outputs=()):
    return {"id": node_id, "type": node_type, "pos": pos, "size": size, "flags": {}, "order": node_id - 1, "mode": 0,
            "properties": {}, "widgets_values": widgets,
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs]}


def picker_workflow(sam_name: str) -> dict:
    """Load Image → Click Mask (+ Load SAM Model) → Convert Mask to Image → Preview Image, at zoom 1."""
    return {"last_node_id": 5, "last_link_id": 4, "version": 0.4, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [40, 90]}},
            "links": [[1, LOAD, 0, CLICK, 1, "IMAGE"], [2, SAM, 0, CLICK, 0, "PIX2GIF_SAM"],
                      [3, CLICK, 0, AS_IMAGE, 0, "MASK"], [4, AS_IMAGE, 0, PREVIEW, 0, "IMAGE"]],
            "nodes": [
                node(LOAD, "LoadImage", [60, 80], [300, 340], [PICTURE, "image"],
                     outputs=[("IMAGE", "IMAGE", [1]), ("MASK", "MASK", [])]),
                node(SAM, "Pix2Gif_LoadSamModel", [60, 470], [300, 60], [sam_name],
                     outputs=[("sam", "PIX2GIF_SAM", [2])]),
                node(CLICK, "Pix2Gif_ClickMask", [400, 80], [560, 520], ["[]", "best score", 0, 0],
                     inputs=[("sam", "PIX2GIF_SAM", 2), ("image", "IMAGE", 1)], outputs=[("mask", "MASK", [3])]),
                node(AS_IMAGE, "MaskToImage", [1000, 80], [220, 50], [], inputs=[("mask", "MASK", 3)],
                     outputs=[("IMAGE", "IMAGE", [4])]),
                node(PREVIEW, "PreviewImage", [1000, 180], [260, 260], [], inputs=[("images", "IMAGE", 4)]),
            ]}


@pytest.fixture(scope="module")
def sam_name(server) -> str:
    """A tiny random SAM in the server's models/sams (the host tests' fixture)."""
    _fixture("sam_models").write_tiny_sam(server.base / "models" / "sams" / "tiny_sam")
    Image.fromarray(block_picture()).save(server.base / "input" / PICTURE)
    return "tiny_sam"


def image_rect(comfy) -> dict:
    """The picker's image as laid out on screen now (x, y, width, height in page px)."""
    comfy.page.wait_for_timeout(300)  # a frame drawn after the last change of layout
    return comfy.page.locator(CANVAS).bounding_box()


def expected_pixel(rect: dict, at: tuple[float, float]) -> tuple[float, float]:
    """The image pixel (continuous, x right and y down from the top-left corner) under page position ``at``."""
    return (at[0] - rect["x"]) / rect["width"] * WIDTH, (at[1] - rect["y"]) / rect["height"] * HEIGHT


def screen(rect: dict, u: float, v: float) -> tuple[float, float]:
    """The page position ``u, v`` of the way across and down the image (whole page px, as a mouse lands)."""
    return round(rect["x"] + u * rect["width"]), round(rect["y"] + v * rect["height"])


def shown_points(comfy) -> list[list[int]]:
    return json.loads(comfy.page.evaluate(PROMPT_JS))


def assert_at(point: list[int], rect: dict, at: tuple[float, float], label: int) -> None:
    x, y = expected_pixel(rect, at)
    assert point[2] == label, point
    # the pixel under the pointer: within one pixel of the continuous position (its centre is at an integer)
    assert abs(point[0] - (x - 0.5)) <= 1 and abs(point[1] - (y - 0.5)) <= 1, (point, (x, y), rect)


def assert_block_under(shot: Image.Image, rect: dict, at: tuple[float, float]) -> None:
    """The colour the page shows at ``at`` is the block of the image pixel the test expects there."""
    x, y = expected_pixel(rect, at)
    if min(x % BLOCK, BLOCK - x % BLOCK, y % BLOCK, BLOCK - y % BLOCK) < EDGE_MARGIN:
        return
    shown = shot.getpixel((int(at[0] - rect["x"]), int(at[1] - rect["y"])))[:3]
    assert np.abs(np.subtract(shown, block_colour(int(x // BLOCK), int(y // BLOCK)))).max() <= 6, (shown, x, y)


def test_clicks_land_on_image_pixels_and_the_mask_shows_after_a_run(comfy, server, object_info, sam_name):
    seen = len(comfy.console)
    comfy.page.evaluate("async () => { await app.refreshComboInNodes?.(); }")  # the user's Refresh: the new SAM
    comfy.load_workflow(picker_workflow(sam_name))
    comfy.page.wait_for_function(f"() => document.querySelector('{CANVAS}')?.width === {WIDTH}", timeout=30_000)
    rect = image_rect(comfy)
    assert abs(rect["width"] / rect["height"] - WIDTH / HEIGHT) < 0.02, rect  # the picture's aspect, not stretched
    picture = Image.open(io.BytesIO(comfy.page.locator(CANVAS).screenshot()))
    mouse = comfy.page.mouse

    positive, shifted, right = screen(rect, 0.23, 0.31), screen(rect, 0.71, 0.64), screen(rect, 0.52, 0.88)
    for at in (positive, shifted, right):
        assert_block_under(picture, rect, at)
    mouse.click(*positive)
    comfy.page.keyboard.down("Shift")
    mouse.click(*shifted)
    comfy.page.keyboard.up("Shift")
    mouse.click(*right, button="right")
    points = shown_points(comfy)
    assert len(points) == 3, points
    for point, at, label in zip(points, (positive, shifted, right), (1, 0, 0)):
        assert_at(point, rect, at, label)

    target = screen(rect, 0.86, 0.12)  # drag the first point there
    mouse.move(*positive)
    mouse.down()
    mouse.move(*target, steps=5)
    mouse.up()
    points = shown_points(comfy)
    assert len(points) == 3, points
    assert_at(points[0], rect, target, 1)
    mouse.click(*right, button="right")  # a right-click on a point removes it
    assert len(shown_points(comfy)) == 2

    comfy.page.evaluate("() => { app.canvas.ds.scale = 0.7; app.canvas.setDirty(true, true); }")
    zoomed = image_rect(comfy)
    assert zoomed["width"] < 0.8 * rect["width"], (zoomed, rect)
    late = screen(zoomed, 0.4, 0.5)
    mouse.click(*late)
    points = shown_points(comfy)
    assert len(points) == 3, points
    assert_at(points[2], zoomed, late, 1)

    saved = {n["id"]: n.get("widgets_values", []) for n in comfy.page.evaluate("() => app.graph.serialize().nodes")}
    assert len(saved[CLICK]) == len(widget_names(object_info["Pix2Gif_ClickMask"])), saved[CLICK]
    assert json.loads(saved[CLICK][0]) == points

    comfy.page.evaluate("() => { app.canvas.ds.scale = 1; app.canvas.setDirty(true, true); }")
    with comfy.page.expect_request(lambda r: r.url.endswith("/prompt") and r.method == "POST") as queued:
        comfy.page.evaluate("() => app.queuePrompt(0, 1)")
    assert json.loads(queued.value.post_data_json["prompt"][str(CLICK)]["inputs"]["points"]) == points
    comfy.page.wait_for_function(f"() => document.querySelector('{CANVAS}').title.includes('last run')",
                                 timeout=RUN_TIMEOUT_MS)
    comfy.screenshot("click_picker-mask-after-run")
    (preview,) = click_outputs(comfy, server)["images"]
    query = urllib.parse.urlencode({k: preview[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as response:
        written = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    assert written.shape == (HEIGHT, WIDTH, 3)
    x, y = 5, HEIGHT - 5  # a corner no point covers: the picker draws the server's preview there
    drawn = comfy.page.evaluate(f"""() => Array.from(document.querySelector('{CANVAS}').getContext('2d')
                                    .getImageData({x}, {y}, 1, 1).data.slice(0, 3))""")
    assert drawn == written[y, x].tolist()
    assert not np.array_equal(written, block_picture()), "the preview shows the mask, not the bare picture"

    assert comfy.page.evaluate("() => app.extensions.filter((e) => e.name === 'pix2gif.clickPicker').length") == 1
    comfy.page.locator(".pix2gif-click-clear").click()
    assert shown_points(comfy) == []
    assert not comfy.our_problems(since=seen), [line.text[:300] for line in comfy.our_problems(since=seen)]


def click_outputs(comfy, server) -> dict:
    """Click Mask's ui outputs of the last prompt, once the server's history has it."""
    for _ in range(RUN_TIMEOUT_MS // 500):
        with urllib.request.urlopen(f"{server.url}/history", timeout=60) as response:
            runs = list(json.load(response).values())
        if runs and str(CLICK) in runs[-1]["outputs"]:
            return runs[-1]["outputs"][str(CLICK)]
        comfy.page.wait_for_timeout(500)
    raise TimeoutError("the prompt never reached the server's history")
