// Pix2Gif front-end extension: shows the clip's format and frame rate under an animated output preview.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "pix2gif.animationInfo";

// A second copy of the pack (a fork in another custom_nodes folder) serves this file under its own URL, so the
// front end imports it twice: register once.
if (!app.extensions?.some((extension) => extension.name === EXTENSION_NAME)) app.registerExtension({
  name: EXTENSION_NAME,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "Pix2Gif_SaveAnimation") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const clip = message?.images?.[0];
      if (!clip) return;
      const text = `${clip.format} · ${clip.frame_rate} fps · ${clip.filename}`;
      let widget = this.widgets?.find((w) => w.name === "pix2gif_info");
      if (!widget) {
        widget = this.addWidget("text", "pix2gif_info", text, () => {});
        widget.serialize = false; // shown, never saved into the workflow's widget values
      }
      widget.value = text;
    };
  },
});
