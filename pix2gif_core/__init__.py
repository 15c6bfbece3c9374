"""Pix2Gif engine: plain PyTorch, no ComfyUI imports."""
