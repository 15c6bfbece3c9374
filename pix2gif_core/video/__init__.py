"""Video output: the GIF encoder (one palette per clip, dithering) and the animation writer (GIF, WebP, APNG,
MP4; atomic writes, workflow metadata).
"""
