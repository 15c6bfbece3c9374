"""I2VGen-XL (Zhang et al. 2023, methods.md §6): the 3-D video UNet conditioned on text, the CLIP image embedding
and the first frame's latent, and reading its two published weight layouts.

``config`` – the architecture numbers, read from a diffusers ``config.json`` or from the weights' shapes;
``layers`` – the building blocks (ResNet + temporal convs, spatial / temporal transformers, the image-latent
temporal encoder); ``unet`` – :class:`~.unet.I2VGenXLUNet`, the network in diffusers' parameter names;
``checkpoint`` – loading a diffusers folder or single file and the VGen ``.pth`` (LDM names, ×2 concat).
"""
