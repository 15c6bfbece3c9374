// Pix2Gif front-end extension.
// - Save Animation plays its clip in the node (GIF, WebP, APNG in an <img>; MP4 in a <video>) above a line with
//   format, frames, fps, size and file name. The front end's own preview is turned off for this node: it sends an
//   animated GIF to a <video>, which shows nothing.
// - Save Animation shows the widgets of the chosen format only; hidden widgets keep their place and value, so
//   workflows (widget values by position) and API prompts are unchanged.
// - The text results of the pack's nodes (ui.text: Measure Motion, the training loss log, sampler warnings) are
//   shown in the node.
// Nothing this file adds to a node is saved into the workflow.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION_NAME = "pix2gif.animationInfo";
const PACK_PREFIX = "Pix2Gif_";
const SAVE_ANIMATION = "Pix2Gif_SaveAnimation";
const PREVIEW_WIDGET = "pix2gif_preview";
const TEXT_WIDGET = "pix2gif_text";
const PREVIEW_MIN_HEIGHT = 96; // px: the clip, plus the info line
const TEXT_MIN_HEIGHT = 56; // px: three lines
/** Save Animation's widgets that apply to one format only (the rest apply to all). */
const FORMAT_WIDGETS = { gif_dither: "gif", workflow_png: "gif", webp_quality: "webp", mp4_crf: "mp4" };

/** A widget shown in the node but never written into the workflow or the prompt. */
function addUnsavedDomWidget(node, name, element, minHeight) {
  const widget = node.addDOMWidget(name, name, element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
  });
  widget.serialize = false;
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  return widget;
}

/** The server address of a saved file ({filename, subfolder, type}), never cached. */
export function viewUrl(item) {
  const query = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder ?? "", type: item.type });
  return api.apiURL(`/view?${query}&rand=${Math.random()}`);
}

function infoLine(clip) {
  const parts = [clip.format.toUpperCase()];
  if (clip.frames !== undefined) parts.push(`${clip.frames} frames`);
  parts.push(`${clip.frame_rate} fps`);
  if (clip.width !== undefined) parts.push(`${clip.width}×${clip.height}`);
  parts.push(clip.filename);
  return parts.join(" · ");
}

/** The <img> (GIF, WebP, APNG) or <video> (MP4) that plays ``clip`` as saved: loop count and ping-pong are in the
 * file for the image formats; MP4 has no loop count, so the player repeats it (forever for 0). */
function mediaElement(clip) {
  const style = "width:100%;flex:1 1 0;min-height:0;object-fit:contain;";
  if (clip.format !== "mp4") {
    const img = document.createElement("img");
    img.style.cssText = style;
    img.src = viewUrl(clip);
    return img;
  }
  const video = document.createElement("video");
  video.style.cssText = style;
  Object.assign(video, { muted: true, autoplay: true, playsInline: true, controls: true });
  const plays = clip.loop_count ?? 0;
  video.loop = plays === 0;
  let played = 1;
  video.addEventListener("ended", () => {
    if (plays > 0 && played < plays) {
      played += 1;
      video.play();
    }
  });
  video.src = viewUrl(clip);
  return video;
}

function showClip(node, clip) {
  let widget = node.widgets?.find((w) => w.name === PREVIEW_WIDGET);
  if (!widget) {
    const box = document.createElement("div");
    box.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;overflow:hidden;";
    const info = document.createElement("div");
    info.className = "pix2gif-info";
    info.style.cssText = "font:11px sans-serif;opacity:0.8;padding:2px 4px;white-space:nowrap;overflow:hidden;" +
      "text-overflow:ellipsis;flex:0 0 auto;";
    box.append(document.createElement("span"), info);
    widget = addUnsavedDomWidget(node, PREVIEW_WIDGET, box, PREVIEW_MIN_HEIGHT);
  }
  const box = widget.element;
  box.firstChild.replaceWith(mediaElement(clip));
  const info = box.querySelector(".pix2gif-info");
  info.textContent = infoLine(clip);
  info.title = info.textContent;
  app.graph.setDirtyCanvas(true, true);
}

function showText(node, lines) {
  let widget = node.widgets?.find((w) => w.name === TEXT_WIDGET);
  if (!widget) {
    const area = document.createElement("textarea");
    area.readOnly = true;
    area.className = "pix2gif-text";
    area.style.cssText = "width:100%;height:100%;resize:none;font:11px monospace;box-sizing:border-box;";
    widget = addUnsavedDomWidget(node, TEXT_WIDGET, area, TEXT_MIN_HEIGHT);
  }
  widget.element.value = lines.join("\n");
}

const collapsedWidgets = new WeakSet();

/** ``hidden`` for the front ends that skip hidden widgets; no height for those that still lay them out (1.32). */
function setWidgetShown(widget, shown) {
  widget.hidden = !shown;
  if (!shown && !collapsedWidgets.has(widget)) {
    widget.computeSize = () => [0, -4];
    collapsedWidgets.add(widget);
  } else if (shown && collapsedWidgets.has(widget)) {
    delete widget.computeSize;
    collapsedWidgets.delete(widget);
  }
}

/** Hide Save Animation's widgets that do not apply to the chosen format (they keep their place and value). */
function showFormatWidgets(node) {
  const format = node.widgets?.find((w) => w.name === "format")?.value;
  for (const widget of node.widgets ?? []) {
    if (widget.name in FORMAT_WIDGETS) setWidgetShown(widget, FORMAT_WIDGETS[widget.name] === format);
  }
  app.graph?.setDirtyCanvas(true, true);
}

// A second copy of the pack (a fork in another custom_nodes folder) serves this file under its own URL, so the
// front end imports it twice: register once.
if (!app.extensions?.some((extension) => extension.name === EXTENSION_NAME)) app.registerExtension({
  name: EXTENSION_NAME,

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PACK_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.text?.length) showText(this, message.text);
      const clip = message?.images?.[0];
      if (nodeData.name === SAVE_ANIMATION && clip?.format) showClip(this, clip);
    };
  },

  nodeCreated(node) {
    if (node.comfyClass !== SAVE_ANIMATION) return;
    // the front end's preview (set up while drawing the node's background) is the pack's own here
    node.onDrawBackground = () => {};
    const format = node.widgets?.find((w) => w.name === "format");
    if (format) {
      const callback = format.callback;
      format.callback = function () {
        const result = callback?.apply(this, arguments);
        showFormatWidgets(node);
        return result;
      };
    }
    showFormatWidgets(node);
  },

  loadedGraphNode(node) {
    if (node.comfyClass === SAVE_ANIMATION) showFormatWidgets(node);
  },
});
