"""Lay the bundled workflows out for people: real node sizes, left-to-right columns by data flow, one group per
column named after its stages, a Note, `properties.models` on the loaders of public files, GIFs saved undithered.

Rewrites ``workflows/*.json`` in place (node ids, links and widget values are kept, so a workflow runs as before);
``tests/host/test_workflow_layout.py`` checks the result without a browser.

    python tests/harness/lay_out_workflows.py
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parent.parent.parent / "workflows"
COLUMN_GAP, ROW_GAP, MARGIN, TITLE_HEIGHT, GROUP_PAD = 70, 50, 40, 30, 20
WIDTH = 380
#: extra height the front end gives a node for what it shows besides sockets and one-line widgets
TALL_WIDGETS = {"CLIPTextEncode": 90, "Pix2Gif_Pix2GifSampler": 90, "Pix2Gif_SaveAnimation": 280,
                "PreviewImage": 280, "LoadImage": 300, "Pix2Gif_MeasureMotion": 80,
                "Pix2Gif_TrainMotionEmbeddings": 80, "Pix2Gif_ClickMask": 260}
STAGES = {  # node type → its stage; a column's group is named after the stages of its nodes
    "CheckpointLoaderSimple": "Models", "Pix2Gif_LoadMotionModel": "Models", "Pix2Gif_LoadPix2GifModel": "Models",
    "Pix2Gif_LoadMotionEmbeddings": "Models", "LoadImage": "Input image", "ImageScale": "Input image",
    "VAEEncode": "Encode", "CLIPTextEncode": "Prompts", "Pix2Gif_ApplyMotionModel": "Motion model",
    "Pix2Gif_ApplyMotionEmbeddings": "Motion", "Pix2Gif_AnimateZero": "AnimateZero",
    "Pix2Gif_AnimateZeroFirstFrame": "First frame", "Pix2Gif_AnimateZeroInvert": "First frame",
    "ContextWindowsManual": "Context windows", "Pix2Gif_WarpLatent": "Motion", "Pix2Gif_MotionPreview": "Motion",
    "Pix2Gif_MotionNoisePrior": "Noise prior", "Pix2Gif_TrainMotionEmbeddings": "Training",
    "Pix2Gif_GifSampler": "Sampling", "Pix2Gif_Pix2GifSampler": "Sampling", "VAEDecode": "Decode",
    "Pix2Gif_SaveAnimation": "Output", "PreviewImage": "Output", "Pix2Gif_MeasureMotion": "Output",
    "Pix2Gif_SaveMotionEmbeddings": "Output", "Pix2Gif_LoadSamModel": "Models", "Pix2Gif_ClickMask": "Click → mask",
    "MaskToImage": "Mask to video size", "ImageToMask": "Mask to video size", "Pix2Gif_RegionalMotion": "Regional motion",
    "Pix2Gif_LoadFollowYourClickModel": "Models",
    "Pix2Gif_FollowYourClickConditioning": "Conditioning",
    "Pix2Gif_LoadI2VGenXLModel": "Models", "CLIPLoader": "Models", "CLIPVisionLoader": "Models",
    "VAELoader": "Models",
    "Pix2Gif_I2VGenXLConditioning": "Conditioning", "KSampler": "Sampling", "Pix2Gif_I2VGenXLRefine": "Refinement",
}
GROUP_COLOURS = ("#3f789e", "#8a8a3f", "#3f8a5c", "#8a5c3f", "#6b3f8a", "#3f7f8a", "#8a3f5c", "#5c5c5c")
#: public files (the names the official releases use) → where the front end may offer them
MODELS = {
    "CheckpointLoaderSimple": ("checkpoints", {
        "v1-5-pruned-emaonly-fp16.safetensors":
            "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
            "v1-5-pruned-emaonly-fp16.safetensors"}),
    "Pix2Gif_LoadMotionModel": ("animatediff_models", {
        "mm_sd_v15_v2.ckpt": "https://huggingface.co/guoyww/animatediff/resolve/main/mm_sd_v15_v2.ckpt",
        "v3_sd15_mm.ckpt": "https://huggingface.co/guoyww/animatediff/resolve/main/v3_sd15_mm.ckpt"}),
    "Pix2Gif_LoadSamModel": ("sams", {
        "sam_vit_b_01ec64.pth": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"}),
}
SAMPLE_IMAGE = ("Copy workflows/assets/sample_landscape.png from the pack into ComfyUI's input/ folder (or pick your "
                "own image in Load Image).")
I2VGEN_XL_FILES = (
    "Files from huggingface.co/ali-vilab/i2vgen-xl, renamed: unet/diffusion_pytorch_model.fp16.safetensors → "
    "models/diffusion_models/i2vgen_xl_unet.fp16.safetensors (or VGen's i2vgen_xl_00854500.pth); "
    "text_encoder/model.fp16.safetensors → models/text_encoders (models/clip before ComfyUI v0.3)/"
    "i2vgen_xl_text_encoder.fp16.safetensors; image_encoder/model.fp16.safetensors → models/clip_vision/"
    "i2vgen_xl_image_encoder.fp16.safetensors (or an OpenCLIP ViT-H-14 CLIP vision file you have); "
    "vae/diffusion_pytorch_model.fp16.safetensors → models/vae/i2vgen_xl_vae.fp16.safetensors (or the SD 2.1 / "
    "SD1.5 VAE).")
NOTES = {
    "animatediff_txt2gif.json":
        "SD1.5 + an AnimateDiff motion module → a 16-frame GIF from a prompt.\n\nFiles: an SD1.5 checkpoint in "
        "models/checkpoints, mm_sd_v15_v2.ckpt (or v3_sd15_mm.ckpt) in models/animatediff_models.\nChange: the "
        "prompts; frames (16 as trained, up to 32 for v2/v3); Save Animation's format and fps.",
    "animatediff_long_clip.json":
        "A 64-frame clip from SD1.5 + AnimateDiff, longer than the motion module's 32 positions (v2/v3; 24 for "
        "v1): ComfyUI's own Context Windows (Manual) samples it in overlapping 16-frame windows (overlap 4, "
        "pyramid fusion, causal_window_fix on). Needs ComfyUI v0.33 or later.\n\nFiles: as animatediff_txt2gif."
        "\nChange: frames (any number); keep context_length ≤ 31 for v2/v3 (23 for v1): the causal_window_fix "
        "frame makes each window one longer. AnimateZero cannot run in context windows.",
    "animatezero_txt2gif.json":
        "AnimateZero on a generated image: SD1.5 samples the first frame and records its trajectory; AnimateZero "
        "+ AnimateDiff animate it into a 16-frame GIF that starts with exactly that image.\n\nFiles: an SD1.5 "
        "checkpoint, an AnimateDiff motion module.\nChange: the prompts. Keep seed, steps, sampler, scheduler and "
        "size the same in the First Frame node and the GIF Sampler.",
    "animatezero_image2gif.json":
        "AnimateZero on a photo: DDIM inversion of the image under SD1.5, then AnimateZero + AnimateDiff animate "
        "it; the GIF's first frame is the photo as the VAE reproduces it.\n\nFiles: an SD1.5 checkpoint, an "
        "AnimateDiff motion module. " + SAMPLE_IMAGE + "\nChange: the prompt describing the photo. Keep steps, "
        "sampler, scheduler and denoise the same in Invert Image and the GIF Sampler.",
    "follow_your_click_regional.json":
        "Follow-Your-Click with public weights: click on the photo → Segment Anything makes a mask → only that "
        "region moves. Click on the image in Click Mask (click: object, shift/right-click: background, drag: move); "
        "after a run the node shows the mask over the photo. The mask is scaled to the video size; AnimateZero + "
        "AnimateDiff animate the photo (its DDIM inversion pins frame 1) and Regional Motion keeps every frame "
        "equal to frame 1 outside the mask, so here the sky drifts while the house and hills stay still.\n\n"
        "Files: an SD1.5 checkpoint, an AnimateDiff motion module, sam_vit_b_01ec64.pth (or sam_vit_l / sam_vit_h, "
        "or a Hugging Face SAM / SAM 2 folder) in models/sams. " + SAMPLE_IMAGE + "\nChange: the clicks, the "
        "prompt saying how the region moves, Click Mask's dilation, Regional Motion's strength (0 = still).",
    "motion_inversion_train.json":
        "Motion Inversion, training: a reference clip (here the bundled landscape zooming in, made by Motion "
        "Preview; connect any IMAGE batch) + a prompt describing it → 400 steps of motion-embedding training → "
        "models/motion_embeddings/motion_inversion/landscape_zoom_00001.safetensors.\n\nFiles: an SD1.5 "
        "checkpoint, an AnimateDiff motion module. " + SAMPLE_IMAGE + "\nChange: the clip, the prompt, steps.",
    "motion_inversion_apply.json":
        "Motion Inversion, applying: trained motion embeddings on a new prompt, sampling from the DDIM-inverted "
        "reference clip blended with fresh noise → a 16-frame GIF with the learned motion.\n\nFiles: an SD1.5 "
        "checkpoint, the motion module the embeddings were trained on, the embeddings in models/motion_embeddings."
        " " + SAMPLE_IMAGE + "\nChange: the prompt, the embeddings' strength and mode, prior_weight.",
    "follow_your_click_model.json":
        "The faithful Follow-Your-Click model: a photo, the region that moves (here the clouds, painted into the "
        "photo's alpha channel as ComfyUI's mask editor does; or Click Mask) and a short motion prompt → a "
        "16-frame GIF whose first frame is the photo. The 9-channel UNet reads the noisy latent, the mask on "
        "every frame and the photo's latent on frame 1; motion_strength (4) and fps (2) are the numbers it was "
        "conditioned on. Official sampling: DDIM, 100 steps, CFG 8.\n\nFiles: the SD1.5 checkpoint it was "
        "fine-tuned from; a Follow-Your-Click checkpoint in models/follow_your_click. Its authors never published "
        "theirs (Follow-Your-Click issue #18): without one, use Click Mask + Regional Motion with public "
        "AnimateDiff weights. Copy workflows/assets/sample_landscape_clouds_masked.png into ComfyUI's input/ "
        "folder.\nChange: the prompt, the mask (right-click Load Image → Open in MaskEditor), motion_strength.",
    "i2vgen_xl_image2video.json":
        "I2VGen-XL, base stage: a photo + a prompt → 16 frames at 640×352 that start from the photo, with the public "
        "single-stage model, sampled by ComfyUI's stock KSampler (DDIM 50 steps, cfg 9, VGen's negative prompt). "
        "Native size: 1280×704 (≈ 12 GiB per step in fp16, see the README).\n\n" + I2VGEN_XL_FILES + " " +
        SAMPLE_IMAGE + "\nChange: the prompt; width × height in the Conditioning node (multiples of 8); frames "
        "(16 trained), fps.",
    "i2vgen_xl_cascade.json":
        "I2VGen-XL cascade: the base stage at 640×352, then I2VGen-XL Refine resizes the clip to 1280×704, "
        "DDIM-inverts it to t 700 with the empty text and re-samples 30 steps (dpmpp_2m_sde, cfg 9) with a brief "
        "text – VGen's sr600 recipe. The paper's refinement model was never released (VGen #49/#86): the same public model refines "
        "here; an SD1.5 + Apply Motion Model MODEL can refine at 512×512 instead.\n\n" + I2VGEN_XL_FILES + " " +
        SAMPLE_IMAGE + "\nChange: the brief text; noise_level (lower keeps more of the base clip); mode (noise "
        "(SDEdit) skips the inversion); the target size (e.g. 960×528 when memory is short).",
    "motion_preview.json":
        "Weight-free motion preview: the image zooms in over 16 frames → GIF, plus its measured motion "
        "magnitude. No model needed; seconds on a CPU.\n\n" + SAMPLE_IMAGE + "\nChange: motion (translate / zoom "
        "/ rotate / sway), magnitude in pixels, direction, frames, an optional mask.",
    "pix2gif_checkpoint.json":
        "Pix2Gif: a Pix2Gif checkpoint + image + caption + magnitudes → one frame per magnitude → a 4 fps GIF, and "
        "each frame's measured motion against the source.\n\nFiles: a Pix2Gif training checkpoint in "
        "models/checkpoints (its authors never published one). " + SAMPLE_IMAGE + "\nChange: the caption, the "
        "magnitudes (pixels of optical flow at 256×256, trained 2–20).",
    "warp_then_refine.json":
        "Training-free Pix2Gif-style animation: the image's latent zooms in over 16 frames (Warp Latent), then "
        "SD1.5 + AnimateDiff refine the clip at denoise 0.55 → GIF.\n\nFiles: an SD1.5 checkpoint, an AnimateDiff "
        "motion module. " + SAMPLE_IMAGE + "\nChange: the motion and magnitude, denoise (0.4–0.7), the prompts.",
}


def node_height(node: dict) -> int:
    rows = max(len(node.get("inputs") or []), len(node.get("outputs") or []))
    widgets = len(node.get("widgets_values") or []) if isinstance(node.get("widgets_values"), list) else 0
    return TITLE_HEIGHT + 22 * rows + 28 * widgets + TALL_WIDGETS.get(node["type"], 0)


def columns(nodes: list[dict], links: list[list]) -> dict[int, int]:
    """Node id → column: the longest chain of links from a source node."""
    feeders = defaultdict(list)
    for _, source, _, target, _, _ in links:
        feeders[target].append(source)
    depth: dict[int, int] = {}

    def of(node_id: int) -> int:
        if node_id not in depth:
            depth[node_id] = 1 + max((of(source) for source in feeders[node_id]), default=-1)
        return depth[node_id]

    return {node["id"]: of(node["id"]) for node in nodes}


def lay_out(name: str, workflow: dict) -> dict:
    nodes = [node for node in workflow["nodes"] if node["type"] != "Note"]
    column_of = columns(nodes, workflow["links"])
    by_column = defaultdict(list)
    for node in sorted(nodes, key=lambda n: n.get("order", 0)):
        by_column[column_of[node["id"]]].append(node)
    groups, bottom = [], 0
    x = MARGIN + GROUP_PAD
    for index, column in enumerate(sorted(by_column)):
        y = MARGIN + TITLE_HEIGHT + GROUP_PAD + 40  # room for the group's title
        width = max(WIDTH, *(8 * len(node.get("title") or node["type"]) + 60 for node in by_column[column]))
        for node in by_column[column]:
            node["pos"], node["size"] = [x, y], [width, node_height(node)]
            y += node["size"][1] + TITLE_HEIGHT + ROW_GAP
        stages = dict.fromkeys(STAGES.get(n["type"], "Nodes") for n in by_column[column])
        stage = " · ".join(stages)
        groups.append({"title": stage, "bounding": [x - GROUP_PAD, MARGIN, width + 2 * GROUP_PAD,
                                                    y - MARGIN - ROW_GAP + GROUP_PAD],
                       "color": GROUP_COLOURS[index % len(GROUP_COLOURS)], "font_size": 24, "flags": {}})
        bottom = max(bottom, y)
        x += width + 2 * GROUP_PAD + COLUMN_GAP
    old_note = next((node for node in workflow["nodes"] if node["type"] == "Note"), None)
    note_id = old_note["id"] if old_note else max(n["id"] for n in nodes) + 1
    note = {"id": note_id, "type": "Note", "title": "About this workflow", "pos": [MARGIN, bottom + 20],
            "size": [max(760, x - COLUMN_GAP - 2 * MARGIN), 200], "flags": {}, "order": len(nodes), "mode": 0,
            "inputs": [], "outputs": [], "properties": {}, "widgets_values": [NOTES[name]]}
    for node in nodes:
        if node["type"] in MODELS:
            directory, public = MODELS[node["type"]]
            chosen = node["widgets_values"][0]
            node.setdefault("properties", {})["models"] = (
                [{"name": chosen, "url": public[chosen], "directory": directory}] if chosen in public else [])
        if node["type"] == "Pix2Gif_SaveAnimation":
            node["widgets_values"][6] = "none"  # gif_dither: the benchmarks' best (RESULTS.md)
    workflow["nodes"] = nodes + [note]
    workflow["groups"] = groups
    workflow["last_node_id"] = max(workflow.get("last_node_id", 0), note_id)
    return workflow


def main() -> None:
    for path in sorted(WORKFLOWS.glob("*.json")):
        with open(path) as f:
            workflow = json.load(f)
        with open(path, "w") as f:
            json.dump(lay_out(path.name, workflow), f, indent=1, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
