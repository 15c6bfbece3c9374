"""Pix2Gif: the FlowNet and magnitude (interval) embedding, the text + magnitude conditioning with 3-way CFG,
and reading the Lightning training checkpoints.
"""
