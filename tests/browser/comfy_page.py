"""One ComfyUI page in headless Chromium (playwright), read the way a person sees it: the graph the front end
built, the console, screenshots.

Everything here reads the page; nothing computes what a test expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

APP_READY_TIMEOUT_MS = 120_000
#: the pack's code and files as the browser names them: /extensions/<folder>/pix2gif.js, "pix2gif.animationInfo",
#: /api/workflow_templates/<folder>/..., our own log lines
OUR_MARK = "pix2gif"

GRAPH_NODES_JS = """() => app.graph._nodes.map((node) => ({
  id: String(node.id), type: node.type, title: node.title,
  pos: [node.pos[0], node.pos[1]], size: [node.size[0], node.size[1]],
  registered: node.type in LiteGraph.registered_node_types, has_errors: !!node.has_errors,
  widgets: (node.widgets || []).map((w) => [w.name, w.value]),
}))"""


@dataclass
class ConsoleLine:
    kind: str  # "error", "warning", ... or "pageerror" for an uncaught exception
    text: str
    url: str = ""

    def ours(self, origin: str) -> bool:
        """From the pack: it names the pack and comes from the page's own server (not, e.g., the front end asking
        api.comfy.org about our node ids, which an offline machine cannot reach)."""
        local = not self.url or self.url.startswith(origin)
        return local and (OUR_MARK in self.text.lower() or OUR_MARK in self.url.lower())


@dataclass
class ComfyPage:
    page: object  # playwright.sync_api.Page
    origin: str
    reports: Path
    console: list[ConsoleLine] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser, url: str, reports: Path) -> "ComfyPage":
        """A new page on ``url``, returned once the front end has registered the pack's node types."""
        page = browser.new_page(viewport={"width": 1800, "height": 1100})
        comfy = cls(page, url.rstrip("/"), reports)
        page.on("request", lambda request: comfy.requested.append(request.url))
        page.on("console", lambda m: comfy.console.append(ConsoleLine(m.type, m.text, m.location.get("url", ""))))
        page.on("pageerror", lambda e: comfy.console.append(ConsoleLine("pageerror", f"{e}\n{e.stack or ''}")))
        page.goto(url)
        comfy.wait_until_ready()
        return comfy

    def wait_until_ready(self) -> None:
        self.page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types"
                                    "?.Pix2Gif_SaveAnimation", timeout=APP_READY_TIMEOUT_MS)

    def our_problems(self, since: int = 0) -> list[ConsoleLine]:
        """Console errors, warnings and uncaught exceptions from the pack (after the first ``since`` lines)."""
        return [line for line in self.console[since:] if line.ours(self.origin) and line.kind in ("error", "warning", "pageerror")]

    def load_workflow(self, workflow: dict) -> None:
        self.page.evaluate("async (workflow) => { await app.loadGraphData(workflow); }", workflow)
        self.page.wait_for_timeout(500)  # a few frames drawn: node sizes settled

    def nodes(self) -> list[dict]:
        return self.page.evaluate(GRAPH_NODES_JS)

    def title_height(self) -> float:
        return self.page.evaluate("() => LiteGraph.NODE_TITLE_HEIGHT")

    def screenshot(self, name: str) -> Path:
        self.reports.mkdir(parents=True, exist_ok=True)
        path = self.reports / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.page.close()


DROP_FILE_JS = """async ({url, name, mime}) => {
  const blob = await (await fetch(url)).blob();
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type: mime}));
  const canvas = app.canvasEl ?? document.querySelector("canvas");
  for (const kind of ["dragenter", "dragover", "drop"]) {
    canvas.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""


def drop_file(comfy: ComfyPage, url: str, name: str, mime: str) -> None:
    """Drop the file served at ``url`` onto the canvas, as a person drags it in from their file manager."""
    comfy.page.evaluate(DROP_FILE_JS, {"url": url, "name": name, "mime": mime})
    comfy.page.wait_for_timeout(1500)


def saved_graph(comfy: ComfyPage) -> dict[str, tuple[str, list]]:
    """node id → (type, widget values) of the workflow the page would save now."""
    return {str(node["id"]): (node["type"], node.get("widgets_values") or [])
            for node in comfy.page.evaluate("() => app.graph.serialize().nodes")}


def overlapping(nodes: list[dict], title_height: float) -> list[tuple[str, str]]:
    """Pairs of node ids whose boxes (title bar included) overlap, from ``ComfyPage.nodes()``."""
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - title_height, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes}
    ids = sorted(boxes)
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]
            if boxes[a][0] < boxes[b][2] and boxes[b][0] < boxes[a][2]
            and boxes[a][1] < boxes[b][3] and boxes[b][1] < boxes[a][3]]
