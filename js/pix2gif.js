// Pix2Gif front-end extension: shows the clip's format and frame rate under an animated output preview.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "pix2gif.animationInfo",
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
