"""AnimateDiff motion modules: the temporal transformer, reading the official checkpoints, and the layers
that run inside a 2-D SD UNet to make it a video UNet (injected motion modules, cross-frame GroupNorm).
"""
