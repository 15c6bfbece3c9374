// Click picker of Pix2Gif's Click Mask node (Follow-Your-Click): the node shows the image its `image` input gets
// (the connected Load Image's picture; after a run, the node's own preview: that image with the mask over it), and
// clicks on it edit the node's `points` widget, JSON [[x, y, label], …] in IMAGE pixels (x right, y down from the
// top-left pixel, pixel centres at integers), whatever size the image is shown at:
// - click: a point on the object (label 1); shift-click or right-click: a background point (label 0);
// - drag a point to move it; right-click a point to remove it; "Clear" removes all.
// The points live in the `points` widget only, so a saved workflow and an API prompt carry them; the picker itself
// saves nothing. Typing in the widget redraws the points.
import { app } from "../../scripts/app.js";
import { viewUrl } from "./pix2gif.js";

const EXTENSION_NAME = "pix2gif.clickPicker";
const CLICK_MASK = "Pix2Gif_ClickMask";
const PICKER_WIDGET = "pix2gif_click_picker";
const POINTS_WIDGET = "points";
const IMAGE_INPUT = "image";
const PICKER_MIN_HEIGHT = 220; // px of the node at 100 %: the image, plus the hint line
const NODE_MIN_WIDTH = 320;
const POINT_RADIUS = 6; // px of the node at 100 %, whatever the image's size
const GRAB_RADIUS = 10; // px of the node: a press this close to a point drags it
const OBJECT = 1;
const BACKGROUND = 0;
const POINT_COLORS = { [OBJECT]: "#2ecc71", [BACKGROUND]: "#ff4757" };
const HINT = "click: object · shift/right-click: background · drag: move · right-click a point: remove";

/** The clicks of the widget's text: [[x, y, label], …] ([x, y] alone is on the object); [] when it is no list. */
function parsePoints(text) {
  let entries;
  try {
    entries = JSON.parse(text || "[]");
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  return entries
    .filter((e) => Array.isArray(e) && e.length >= 2 && Number.isFinite(e[0]) && Number.isFinite(e[1]))
    .map(([x, y, label = OBJECT]) => [x, y, label === BACKGROUND ? BACKGROUND : OBJECT]);
}

/** The points as the node's docs write them: "[[120, 80, 1], [30, 40, 0]]". */
function formatPoints(points) {
  return `[${points.map((p) => `[${p.join(", ")}]`).join(", ")}]`;
}

/** An image's address without the cache-busting `rand` the front end adds, to tell pictures apart. */
function sourceKey(image) {
  const url = new URL(image.src, location.href);
  url.searchParams.delete("rand");
  return url.href;
}

/** The picture of the node feeding the `image` input (a Load Image's preview), once loaded; else null. */
function upstreamImage(node) {
  const slot = node.inputs?.findIndex((input) => input.name === IMAGE_INPUT) ?? -1;
  const source = slot >= 0 ? node.getInputNode?.(slot) : null;
  const image = source?.imgs?.[source.imageIndex ?? 0] ?? source?.imgs?.[0];
  return image?.complete && image.naturalWidth > 0 ? image : null;
}

class ClickPicker {
  constructor(node) {
    this.node = node;
    this.overlay = null; // {image, key}: the last run's preview and the upstream picture it was made from
    this.drag = null; // index of the point being dragged
    this.drawn = {};
    this.element = document.createElement("div");
    this.element.className = "pix2gif-click-picker";
    this.element.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;overflow:hidden;";
    this.stage = document.createElement("div");
    this.stage.style.cssText = "flex:1 1 0;min-height:0;display:flex;align-items:center;justify-content:center;" +
      "overflow:hidden;";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "pix2gif-click-canvas";
    this.canvas.style.cssText = "display:none;cursor:crosshair;touch-action:none;user-select:none;";
    this.message = document.createElement("div");
    this.message.style.cssText = "font:11px sans-serif;opacity:0.7;text-align:center;padding:8px;";
    this.message.textContent = "Connect a Load Image to the image input (or run once) to place clicks on the image";
    this.stage.append(this.canvas, this.message);
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;align-items:center;gap:6px;flex:0 0 auto;padding:2px 4px;";
    this.hint = document.createElement("span");
    this.hint.className = "pix2gif-click-hint";
    this.hint.style.cssText = "font:11px sans-serif;opacity:0.8;flex:1 1 auto;white-space:nowrap;overflow:hidden;" +
      "text-overflow:ellipsis;";
    this.hint.textContent = this.hint.title = HINT;
    const clear = document.createElement("button");
    clear.className = "pix2gif-click-clear";
    clear.textContent = "Clear";
    clear.title = "Remove every click";
    clear.style.cssText = "font:11px sans-serif;flex:0 0 auto;cursor:pointer;";
    clear.addEventListener("click", (event) => {
      event.stopPropagation();
      this.write([]);
    });
    bar.append(this.hint, clear);
    this.element.append(this.stage, bar);

    this.canvas.addEventListener("pointerdown", (event) => this.press(event));
    this.canvas.addEventListener("pointermove", (event) => this.move(event));
    this.canvas.addEventListener("pointerup", (event) => this.release(event));
    this.canvas.addEventListener("pointercancel", (event) => this.release(event));
    this.canvas.addEventListener("contextmenu", (event) => {
      event.preventDefault();
      event.stopPropagation();
    });
    new ResizeObserver(() => this.draw(true)).observe(this.stage);
  }

  get pointsWidget() {
    return this.node.widgets?.find((w) => w.name === POINTS_WIDGET);
  }

  points() {
    return parsePoints(this.pointsWidget?.value);
  }

  write(points) {
    const widget = this.pointsWidget;
    if (!widget) return;
    widget.value = formatPoints(points);
    widget.callback?.(widget.value, app.canvas, this.node);
    this.draw();
    this.node.setDirtyCanvas?.(true, false); // the node (its points widget) only: nothing behind it changed
  }

  /** The picture clicks refer to: the last run's preview while the upstream picture is the one it was made from. */
  shownImage() {
    const upstream = upstreamImage(this.node);
    if (this.overlay && (!upstream || sourceKey(upstream) === this.overlay.key)) return this.overlay.image;
    return upstream;
  }

  showOverlay(item) {
    const upstream = upstreamImage(this.node);
    const image = new Image();
    image.onload = () => {
      this.overlay = { image, key: upstream ? sourceKey(upstream) : null };
      this.draw(true);
    };
    image.src = viewUrl(item);
  }

  /** The image pixel under the pointer (clamped into the image), from the canvas's on-screen rectangle. */
  pixelAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const { width, height } = this.canvas;
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * width);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * height);
    return [Math.min(Math.max(x, 0), width - 1), Math.min(Math.max(y, 0), height - 1)];
  }

  /** Image pixels per px of the node (the image's size over its size in the node, before the canvas zoom). */
  pixelsPerNodePx() {
    return this.canvas.width / Math.max(this.canvas.clientWidth, 1);
  }

  /** Index of the point within GRAB_RADIUS of the pointer (the top-most), or -1. */
  pointAt(points, event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.canvas.width;
    const y = ((event.clientY - rect.top) / rect.height) * this.canvas.height;
    const reach = GRAB_RADIUS * this.pixelsPerNodePx();
    for (let i = points.length - 1; i >= 0; i--) {
      if (Math.hypot(points[i][0] + 0.5 - x, points[i][1] + 0.5 - y) <= reach) return i;
    }
    return -1;
  }

  press(event) {
    if (event.button !== 0 && event.button !== 2) return;
    event.stopPropagation();
    const points = this.points();
    const hit = this.pointAt(points, event);
    if (hit >= 0 && event.button === 2) {
      points.splice(hit, 1);
      this.write(points);
      return;
    }
    if (hit >= 0) {
      this.drag = hit;
    } else {
      const label = event.button === 2 || event.shiftKey ? BACKGROUND : OBJECT;
      points.push([...this.pixelAt(event), label]);
      this.drag = points.length - 1;
      this.write(points);
    }
    this.canvas.setPointerCapture(event.pointerId);
  }

  move(event) {
    if (this.drag === null) return;
    event.stopPropagation();
    const points = this.points();
    if (!points[this.drag]) return;
    const [x, y] = this.pixelAt(event);
    if (x === points[this.drag][0] && y === points[this.drag][1]) return;
    points[this.drag] = [x, y, points[this.drag][2]];
    this.write(points);
  }

  release(event) {
    if (this.drag === null) return;
    this.drag = null;
    if (this.canvas.hasPointerCapture(event.pointerId)) this.canvas.releasePointerCapture(event.pointerId);
  }

  /** Size the canvas to the image's aspect ratio inside the node (its pixels are the image's pixels). */
  fit(image) {
    if (this.canvas.width !== image.naturalWidth || this.canvas.height !== image.naturalHeight) {
      this.canvas.width = image.naturalWidth;
      this.canvas.height = image.naturalHeight;
    }
    const scale = Math.min(this.stage.clientWidth / image.naturalWidth, this.stage.clientHeight / image.naturalHeight);
    this.canvas.style.width = `${Math.max(image.naturalWidth * scale, 1)}px`;
    this.canvas.style.height = `${Math.max(image.naturalHeight * scale, 1)}px`;
  }

  /** Redraw when the picture, the points or (``force``) the layout changed since the last drawing. */
  draw(force = false) {
    const image = this.shownImage();
    const text = this.pointsWidget?.value ?? "";
    if (!force && image === this.drawn.image && text === this.drawn.text) return;
    this.drawn = { image, text };
    this.canvas.style.display = image ? "" : "none";
    this.message.style.display = image ? "none" : "";
    if (!image) return;
    this.canvas.title = image === this.overlay?.image ? "the mask of the last run over the image" : "the input image";
    this.fit(image);
    const context = this.canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const radius = POINT_RADIUS * this.pixelsPerNodePx();
    context.lineWidth = radius / 3;
    for (const [x, y, label] of this.points()) {
      context.beginPath();
      context.arc(x + 0.5, y + 0.5, radius, 0, 2 * Math.PI);
      context.fillStyle = POINT_COLORS[label];
      context.fill();
      context.strokeStyle = "#ffffff";
      context.stroke();
      context.beginPath(); // the sign: + on the object, − on the background
      context.moveTo(x + 0.5 - radius / 2, y + 0.5);
      context.lineTo(x + 0.5 + radius / 2, y + 0.5);
      if (label === OBJECT) {
        context.moveTo(x + 0.5, y + 0.5 - radius / 2);
        context.lineTo(x + 0.5, y + 0.5 + radius / 2);
      }
      context.stroke();
    }
  }
}

const pickers = new WeakMap();

function addPicker(node) {
  const picker = new ClickPicker(node);
  const widget = node.addDOMWidget(PICKER_WIDGET, PICKER_WIDGET, picker.element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => PICKER_MIN_HEIGHT,
  });
  widget.serialize = false;
  pickers.set(node, picker);
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0], NODE_MIN_WIDTH), Math.max(node.size[1], needed[1])]);
  // the front end's own preview of the node's ui images is the picker here
  node.onDrawBackground = () => {};
  const onDrawForeground = node.onDrawForeground;
  node.onDrawForeground = function () {
    onDrawForeground?.apply(this, arguments);
    picker.draw(); // cheap when nothing changed: picks up a new upstream picture and typed points
  };
}

// A second copy of the pack (another custom_nodes folder) serves this file under its own URL: register once.
if (!app.extensions?.some((extension) => extension.name === EXTENSION_NAME)) app.registerExtension({
  name: EXTENSION_NAME,

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== CLICK_MASK) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const preview = message?.images?.[0];
      if (preview) pickers.get(this)?.showOverlay(preview);
    };
  },

  nodeCreated(node) {
    if (node.comfyClass === CLICK_MASK) addPicker(node);
  },
});
