"""Pix2Gif for ComfyUI: image → animated GIF/video with AnimateDiff-based motion methods.

ComfyUI imports this file; the nodes live in ``nodes/``, the engine in ``pix2gif_core/``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
