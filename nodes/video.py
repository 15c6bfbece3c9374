"""Node: save an IMAGE batch as an animated GIF / WebP / APNG / MP4 that plays in the node's preview."""
from __future__ import annotations

import json
import os
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths

from ..pix2gif_core.video.animation_writer import AnimationOptions, write_animation, write_workflow_image
from ..pix2gif_core.video.gif_encoder import pingpong_order
from .conventions import category, display_name, input_error, node_id, path_inside, reported_as

FORMATS = ("gif", "webp", "apng", "mp4")
GIF_DITHERS = ("none", "ordered", "floyd-steinberg")
#: longest file name the prefix may give, leaving room for "_00001_.webp" within 255 bytes
MAX_NAME_BYTES = 240
WEBP_MAX_SIDE = 16383


class SaveAnimation:
    TITLE = "Save Animation"
    DESCRIPTION = ("Writes the frames as one animated file (GIF with one palette per clip, WebP, APNG, or MP4 "
                   "when PyAV is installed) with the workflow embedded, and plays it in the node.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "Pix2Gif",
                                               "tooltip": "May contain subfolders inside the output folder"}),
                "format": (list(FORMATS), {"default": "gif",
                                           "tooltip": "gif: plays everywhere; webp / apng: full colour; mp4: smallest "
                                                      "(needs PyAV)"}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 120.0, "step": 0.1,
                                  "tooltip": "Frames per second of the file"}),
                "loop_count": ("INT", {"default": 0, "min": 0, "max": 65535,
                                       "tooltip": "How many times the animation plays; 0 = forever"}),
                "pingpong": ("BOOLEAN", {"default": False, "tooltip": "Play forwards then backwards"}),
                "save_output": ("BOOLEAN", {"default": True,
                                            "tooltip": "Off: write to the temp folder (preview only)"}),
                "gif_dither": (list(GIF_DITHERS), {"default": "none",
                                                   "tooltip": "none: best PSNR and size (one palette per clip); "
                                                              "ordered: smoother gradients, stable between frames"}),
                "webp_quality": ("INT", {"default": 90, "min": 0, "max": 100,
                                         "tooltip": "WebP only: 100 lossless, lower smaller"}),
                "mp4_crf": ("INT", {"default": 19, "min": 0, "max": 51,
                                    "tooltip": "H.264 constant rate factor: 0 lossless, 19 visually clean, 51 worst"}),
            },
            "optional": {  # optional: API prompts and workflows saved before it keep validating
                "workflow_png": ("BOOLEAN", {"default": True,
                                             "tooltip": "GIF only: also write <name>.png, the first frame carrying the "
                                                        "workflow (drop it on the canvas to get the graph back; "
                                                        "ComfyUI reads no workflow from GIFs)"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = category("Output")

    def _check_prefix(self, filename_prefix: str) -> None:
        name = os.path.basename(filename_prefix)
        if "\0" in filename_prefix:
            raise input_error(self.TITLE, "filename_prefix contains a NUL character; use letters, digits, - and _")
        if name in ("", ".", ".."):
            raise input_error(self.TITLE, f"filename_prefix '{filename_prefix}' names no file (it would write a "
                                          "hidden '._00001_.gif'); end it with a name, e.g. 'animations/cat'")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise input_error(self.TITLE, f"filename_prefix: its file name is {len(name.encode('utf-8'))} bytes; "
                                          f"file systems allow 255 with the counter and extension, keep it under "
                                          f"{MAX_NAME_BYTES}")

    def _target(self, filename_prefix: str, save_output: bool, extension: str, images) -> tuple[Path, str, str]:
        self._check_prefix(filename_prefix)
        base_dir = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
        if os.path.isabs(filename_prefix) or not path_inside(base_dir, os.path.join(base_dir, filename_prefix)):
            raise input_error(self.TITLE, f"filename_prefix '{filename_prefix}' points outside the "
                                          f"{'output' if save_output else 'temp'} folder; use a relative name "
                                          "such as 'animations/cat'")
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, base_dir, images.shape[2], images.shape[1])
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{counter:05}_.{extension}"  # ComfyUI's naming: its counter finds the next number
        return Path(folder) / filename, subfolder, filename

    def save(self, images, filename_prefix, format, fps, loop_count, pingpong, save_output, gif_dither,
             webp_quality, mp4_crf, workflow_png=True, prompt=None, extra_pnginfo=None):
        comfy.model_management.throw_exception_if_processing_interrupted()
        metadata = {}
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        if format == "webp" and max(images.shape[1:3]) > WEBP_MAX_SIDE:
            raise input_error(self.TITLE, f"format webp: the frames are {images.shape[2]}×{images.shape[1]} px but "
                                          f"WebP allows at most {WEBP_MAX_SIDE} px a side; resize them or choose "
                                          "apng or mp4")
        extension = "png" if format == "apng" else format
        path, subfolder, filename = self._target(filename_prefix, save_output, extension, images)
        progress = comfy.utils.ProgressBar(1)
        with reported_as(self.TITLE):
            options = AnimationOptions(fmt=format, fps=fps, loop=loop_count, pingpong=pingpong,
                                       gif_dither=gif_dither, webp_quality=webp_quality, mp4_crf=mp4_crf)
            write_animation(images, path, options, metadata,
                            check_cancel=comfy.model_management.throw_exception_if_processing_interrupted)
            companion = []
            if format == "gif" and workflow_png and metadata:
                try:
                    still = write_workflow_image(images[0], path.with_suffix(".png"), metadata)
                except BaseException:
                    path.unlink()  # the pair is one result: no GIF without its workflow image
                    raise
                companion = [{"filename": still.name, "subfolder": subfolder,
                              "type": "output" if save_output else "temp"}]
        progress.update(1)
        frames = len(pingpong_order(images.shape[0])) if pingpong else images.shape[0]
        result = {"filename": filename, "subfolder": subfolder, "type": "output" if save_output else "temp",
                  "format": format, "frame_rate": fps, "frames": frames, "width": images.shape[2],
                  "height": images.shape[1], "loop_count": loop_count}  # the node's info line and player
        return {"ui": {"images": [result], "animated": (True,), "workflow_png": companion}}


NODE_CLASSES = {node_id("SaveAnimation"): SaveAnimation}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
