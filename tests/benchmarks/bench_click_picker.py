"""Benchmark: the Click Mask node's click picker while a point is dragged, in the real front end (headless Chromium).

The browser tests' picker workflow (Load Image → Click Mask, the 400×240 block picture) with N points (20 by
default) on the node's image; the mouse drags one of them along a loop over the image (playwright's mouse: one
pointermove per step, as the browser test drags). Measured in the page with performance.now():
  picker  = each pointermove on the picker's canvas, from the first listener (window, capture) to a listener the
            benchmark adds after the picker's own: the picker's handler – points parsed, widget written, the canvas
            redrawn (image + N points) – all of it synchronous;
  graph   = each LiteGraph canvas draw (app.canvas.draw: the graph and every node's foreground, where the picker
            checks for changes);
  frame   = per animation frame (between requestAnimationFrame timestamps) the sum of the two: the script time of
            one frame of the canvas, the figure the 16 ms budget (60 Hz) is about;
and from the browser's performance timeline the long animation frames (PerformanceObserver
"long-animation-frame": frames over 50 ms from their first task to their paint) during the drag, plus the
requestAnimationFrame intervals (over 1.5 × 16.7 ms = a frame dropped, by anything on the machine).

Baseline, measured in the same run: the same drag with 1 point (the dragged one), rounds interleaved with the N-point
rounds; ratios N-point / 1-point per round (median over rounds).

Usage: PIX2GIF_HOST=0.33.0 OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_click_picker.py
       [--points 20] [--steps 120] [--rounds 3]   (hosts with a pinned front end: 0.3.75 → 1.32.9, 0.33.0 → 1.49.6)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS / "browser"), str(TESTS / "harness")]

from PIL import Image  # noqa: E402
from comfy_page import ComfyPage  # noqa: E402
from conftest import CHROMIUM, HOST, REPORTS, start_server  # noqa: E402
from test_click_picker import (CANVAS, CLICK, HEIGHT, PICTURE, WIDTH, block_picture, image_rect,  # noqa: E402
                               picker_workflow)

FRAME_BUDGET_MS = 16.0
REFRESH_MS = 1000 / 60

INSTRUMENT_JS = f"""() => {{
  const bench = window.__pix2gifBench = {{picker: [], graph: [], frames: [], long: [], start: null}};
  const canvas = document.querySelector('{CANVAS}');
  window.addEventListener('pointermove', () => {{ bench.start = performance.now(); }}, true);
  canvas.addEventListener('pointermove', () => {{
    if (bench.start !== null && bench.recording) bench.picker.push([bench.start, performance.now() - bench.start]);
    bench.start = null;
  }});
  const graphCanvas = app.canvas;
  const draw = graphCanvas.draw;
  graphCanvas.draw = function (...args) {{
    const start = performance.now();
    const result = draw.apply(this, args);
    if (bench.recording) bench.graph.push([start, performance.now() - start]);
    return result;
  }};
  const tick = (time) => {{
    if (bench.recording) bench.frames.push(time);
    requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => {{
    for (const entry of list.getEntries()) if (bench.recording) bench.long.push(entry.duration);
  }}).observe({{type: 'long-animation-frame', buffered: false}});
}}"""

RECORD_JS = """(on) => {
  const bench = window.__pix2gifBench;
  if (on) { bench.picker = []; bench.graph = []; bench.frames = []; bench.long = []; }
  bench.recording = on;
  return on ? null : {picker: bench.picker, graph: bench.graph, frames: bench.frames, long: bench.long};
}"""

SET_POINTS_JS = f"""(points) => {{
  const node = app.graph.getNodeById({CLICK});
  const widget = node.widgets.find((w) => w.name === 'points');
  widget.value = JSON.stringify(points);
  widget.callback?.(widget.value);
  node.setDirtyCanvas(true, true);
}}"""


def grid_points(count: int) -> list[list[int]]:
    """``count`` points spread over the image (alternating object / background); the first is the dragged one."""
    columns = math.ceil(math.sqrt(count * WIDTH / HEIGHT))
    rows = math.ceil(count / columns)
    return [[round((i % columns + 0.5) * WIDTH / columns), round((i // columns + 0.5) * HEIGHT / rows), (i + 1) % 2]
            for i in range(count)]


def drag_loop(comfy, rect: dict, start: list[int], steps: int) -> None:
    """Press on the point at image pixel ``start`` and drag it around an ellipse over the image, ``steps`` moves."""
    def page_xy(u: float, v: float) -> tuple[float, float]:
        return rect["x"] + u * rect["width"], rect["y"] + v * rect["height"]

    mouse = comfy.page.mouse
    mouse.move(*page_xy((start[0] + 0.5) / WIDTH, (start[1] + 0.5) / HEIGHT))
    mouse.down()
    for k in range(1, steps + 1):
        angle = 2 * math.pi * k / steps
        mouse.move(*page_xy(0.5 + 0.35 * math.cos(angle) - 0.35, 0.5 + 0.3 * math.sin(angle)))
    mouse.up()


def frame_work(record: dict) -> list[float]:
    """Script ms per animation frame: picker events and graph draws that start between two frame timestamps."""
    frames = record["frames"]
    work = [0.0] * max(len(frames) - 1, 0)
    for start, duration in record["picker"] + record["graph"]:
        for i in range(len(work)):
            if frames[i] <= start < frames[i + 1]:
                work[i] += duration
                break
    return work


def summary(record: dict) -> dict[str, float]:
    picker = [d for _, d in record["picker"]]
    graph = [d for _, d in record["graph"]]
    work = frame_work(record)
    intervals = [b - a for a, b in zip(record["frames"], record["frames"][1:])]

    def p95(values: list[float]) -> float:
        return sorted(values)[min(len(values) - 1, int(0.95 * len(values)))] if values else float("nan")

    return {"moves": len(picker), "picker_median": statistics.median(picker), "picker_max": max(picker),
            "graph_p95": p95(graph), "graph_max": max(graph), "frame_p95": p95(work), "frame_max": max(work),
            "over_budget": sum(w > FRAME_BUDGET_MS for w in work), "frames": len(work),
            "dropped": sum(i > 1.5 * REFRESH_MS for i in intervals), "interval_p50": statistics.median(intervals),
            "long_frames": len(record["long"]), "long_max": max(record["long"], default=0.0)}


def measure(comfy, rect: dict, points: list[list[int]], steps: int) -> dict[str, float]:
    comfy.page.evaluate(SET_POINTS_JS, points)
    comfy.page.wait_for_timeout(300)
    comfy.page.evaluate(RECORD_JS, True)
    drag_loop(comfy, rect, points[0], steps)
    comfy.page.wait_for_timeout(200)  # the last frame drawn and observed
    return summary(comfy.page.evaluate(RECORD_JS, False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(Path(workdir), ("ComfyUI-Pix2Gif",))
        try:
            Image.fromarray(block_picture()).save(server.base / "input" / PICTURE)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                comfy = ComfyPage.open(browser, server.url, REPORTS)
                comfy.load_workflow(picker_workflow("tiny_sam"))
                comfy.page.wait_for_function(f"() => document.querySelector('{CANVAS}')?.width === {WIDTH}",
                                             timeout=30_000)
                comfy.page.evaluate(INSTRUMENT_JS)
                rect = image_rect(comfy)
                measure(comfy, rect, grid_points(args.points), args.steps)  # warm-up
                rounds = []
                for _ in range(args.rounds):
                    many = measure(comfy, rect, grid_points(args.points), args.steps)
                    one = measure(comfy, rect, grid_points(1), args.steps)
                    rounds.append((many, one))
                comfy.screenshot("bench_click_picker")
                browser.close()
        finally:
            server.stop()
    report(args, server.frontend, rounds)


def report(args, frontend: str, rounds: list[tuple[dict, dict]]) -> None:
    print(f"host {HOST}, front end {frontend}, Chromium headless; {args.points} points vs 1, drag of "
          f"{args.steps} moves, {args.rounds} interleaved rounds; ms")
    keys = ("picker_median", "picker_max", "graph_p95", "graph_max", "frame_p95", "frame_max")
    print("| points | moves | " + " | ".join(keys)
          + " | frames over 16 ms | long frames (max ms) | rAF p50 | dropped |")
    for many, one in rounds:
        for row, count in ((many, args.points), (one, 1)):
            print(f"| {count} | {row['moves']} | " + " | ".join(f"{row[k]:.2f}" for k in keys)
                  + f" | {row['over_budget']}/{row['frames']} | {row['long_frames']} ({row['long_max']:.0f})"
                  + f" | {row['interval_p50']:.1f} | {row['dropped']} |")
    for key in ("picker_median", "frame_p95", "frame_max"):
        ratios = [many[key] / one[key] for many, one in rounds if one[key] > 0]
        print(f"{key}: {args.points}-point / 1-point median {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}–{max(ratios):.2f}]")
    worst = max(many["frame_max"] for many, _ in rounds)
    print(f"worst frame with {args.points} points: {worst:.2f} ms script "
          f"({'within' if worst <= FRAME_BUDGET_MS else 'OVER'} the {FRAME_BUDGET_MS:.0f} ms budget)")
    print(json.dumps({"host": HOST, "frontend": frontend, "rounds": rounds}))


if __name__ == "__main__":
    main()
