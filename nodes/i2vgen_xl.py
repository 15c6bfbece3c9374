"""Nodes: I2VGen-XL as a native ComfyUI MODEL (the stock KSampler / SamplerCustom sample it) and its conditioning.

*Load I2VGen-XL Model* reads the UNet (diffusers file or VGen ``.pth``) into a :class:`I2VGenXLModel`: ComfyUI's
model management loads and offloads it; its ``model_sampling`` is v-prediction on the cosine zero-terminal-SNR
schedule. *I2VGen-XL Conditioning* adds the image paths to ComfyUI's own CONDITIONING (text from CLIPTextEncode
with the OpenCLIP ViT-H text encoder), from CLIP_VISION (projected image embedding) and VAE (first-frame latent),
and returns the empty video LATENT. The latent batch is the clip (frames × 4 × h × w), as for the pack's other
video models.
"""
from __future__ import annotations

import functools

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.supported_models_base
import folder_paths
import torch
from torch import Tensor, nn

from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.i2vgen_xl.checkpoint import load_unet
from ..pix2gif_core.i2vgen_xl.conditioning import cover_crop
from ..pix2gif_core.i2vgen_xl.config import LATENT_CHANNELS, I2VGenXLConfig
from ..pix2gif_core.i2vgen_xl.noise_schedule import i2vgen_xl_sigmas
from ..pix2gif_core.i2vgen_xl.step_cost import trace_step
from ..pix2gif_core.i2vgen_xl.unet import I2VGenXLUNet
from . import model_folders
from .attention_backend import host_attention
from .conventions import category, display_name, input_error, managed_model, node_id, reported_as

#: the folder of diffusion-model-only files (``models/diffusion_models``; ``models/unet`` before ComfyUI v0.3)
UNET_FOLDER = "diffusion_models" if "diffusion_models" in folder_paths.folder_names_and_paths else "unet"
IMAGE_LATENT, IMAGE_EMBEDDING, FPS, FRAMES = ("i2vgen_image_latent", "i2vgen_image_embedding", "i2vgen_fps",
                                              "i2vgen_frames")
CONDITIONING_NODE = "I2VGen-XL Conditioning"
AS_STORED = "as stored"
WEIGHT_DTYPES = {AS_STORED: None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class _ModelConfig(comfy.supported_models_base.BASE):
    """SD 2.1 latent space (the KL-f8 VAE, scale 0.18215); the UNet is built by the pack, not from this config."""

    unet_config: dict = {}
    latent_format = comfy.latent_formats.SD15
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]


class I2VGenXLSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """v-prediction on the cosine schedule rescaled to zero terminal SNR (every host, also those without zsnr)."""

    def __init__(self):
        super().__init__(None)
        self.set_sigmas(i2vgen_xl_sigmas().float())


@functools.lru_cache(maxsize=16)
def step_activation_bytes(config: I2VGenXLConfig, videos: int, frames: int, height: int, width: int,
                          dtype: torch.dtype) -> int:
    """Peak activation bytes of one UNet step (meta-device trace, once per shape)."""
    return trace_step(config, videos, frames, height, width, dtype).peak_activation_bytes


def _require_memory(config: I2VGenXLConfig, x: Tensor, videos: int, frames: int) -> None:
    """Refuse, before computing, a step whose activations the device cannot hold (weights are already loaded)."""
    height, width = 8 * x.shape[-2], 8 * x.shape[-1]
    need = step_activation_bytes(config, videos, frames, height, width, x.dtype)
    free = comfy.model_management.get_free_memory(x.device)
    if need > free:
        raise Pix2GifInputError(
            f"frames/width/height: {frames} frames at {width}×{height} need ≈ {need / 2**30:.1f} GiB of activations "
            f"per step ({videos} clips in the batch) but {x.device} has {free / 2**30:.1f} GiB free; give the "
            f"'{CONDITIONING_NODE}' node fewer frames or a smaller size.")


class _HostUNet(nn.Module):
    """The engine's UNet behind ComfyUI's ``diffusion_model(x, timesteps, context, …, **extra_conds)`` call on a
    batch of whole clips ``(videos·frames, 4, h, w)``; per-video conditions are read at each clip's first frame."""

    def __init__(self, unet: I2VGenXLUNet):
        super().__init__()
        self.unet = unet
        unet.use_attention(host_attention())

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor | None = None, control=None,
                transformer_options=None, **conds) -> Tensor:
        if conds.get(IMAGE_LATENT) is None:
            raise Pix2GifInputError(
                f"model: this is an I2VGen-XL UNet; pass positive and negative through the '{CONDITIONING_NODE}' "
                "node (with CLIP vision, VAE and the start image) before the sampler – it has no image otherwise.")
        width = self.unet.config.cross_attention_dim
        if context is None or context.shape[-1] != width:
            raise Pix2GifInputError(
                f"positive/negative: the text conditioning is {None if context is None else context.shape[-1]} wide; "
                f"I2VGen-XL needs the OpenCLIP ViT-H text encoder ({width}) – load I2VGen-XL's text_encoder with "
                "CLIPLoader (type stable_diffusion) or an SD 2.x CLIP.")
        frames = int(conds[FRAMES][0])
        total, channels, h, w = x.shape
        if total % frames:
            raise Pix2GifInputError(f"latent_image: {total} frames are not whole clips of {frames} frames; use the "
                                    f"LATENT of the '{CONDITIONING_NODE}' node.")
        _require_memory(self.unet.config, x, total // frames, frames)
        first = slice(None, None, frames)
        video = x.view(total // frames, frames, channels, h, w).transpose(1, 2)
        out = self.unet(video, timesteps[first], context[first], conds[IMAGE_LATENT][first],
                        conds[IMAGE_EMBEDDING][first], conds[FPS][first])
        return out.transpose(1, 2).reshape(total, channels, h, w)


class I2VGenXLModel(comfy.model_base.BaseModel):
    """A ComfyUI model around the engine's UNet: v-prediction, zero-SNR cosine sigmas, SD latent format, the
    conditioning node's extra conditions passed through."""

    def __init__(self, unet: I2VGenXLUNet, device: torch.device | None = None):
        config = _ModelConfig({})
        config.set_inference_dtype(unet.conv_in.weight.dtype, None)
        super().__init__(config, comfy.model_base.ModelType.V_PREDICTION, device=device,
                         unet_model=lambda **_: _HostUNet(unet))
        self.model_sampling = I2VGenXLSampling()

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        for key in (IMAGE_LATENT, IMAGE_EMBEDDING, FPS, FRAMES):
            if kwargs.get(key) is not None:
                out[key] = comfy.conds.CONDRegular(kwargs[key])
        return out


def build_model(unet: I2VGenXLUNet):
    """The MODEL (a patcher of ComfyUI's model management) holding ``unet``."""
    model = I2VGenXLModel(unet, device=comfy.model_management.unet_offload_device())
    return managed_model(model, comfy.model_management.get_torch_device(),
                         comfy.model_management.unet_offload_device())


def _no_file_message() -> str:
    where = " or ".join(model_folders.folders(UNET_FOLDER))
    return (f"no model file found. Put the I2VGen-XL UNet (ali-vilab/i2vgen-xl unet/diffusion_pytorch_model"
            f".fp16.safetensors, renamed, or i2vgen_xl_00854500.pth) into {where} and press Refresh")


class LoadI2VGenXLModel:
    TITLE = "Load I2VGen-XL Model"
    DESCRIPTION = ("Loads the I2VGen-XL UNet from models/diffusion_models: the diffusers file (fp16/bf16 kept as "
                   "stored unless weight_dtype says otherwise) or VGen's .pth. Sample it with KSampler after the "
                   "I2VGen-XL Conditioning node.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "unet_name": (model_folders.files(UNET_FOLDER), {"tooltip": f"File in models/{UNET_FOLDER}"}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": AS_STORED,
                                                   "tooltip": "compute in the file's dtype, or convert once on "
                                                              "load (fp16: 2.8 GB of weights, fp32: 5.6 GB)"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = category("I2VGen-XL")

    @classmethod
    def VALIDATE_INPUTS(cls, unet_name):
        return model_folders.choice_error(UNET_FOLDER, unet_name, "unet_name", cls.TITLE, _no_file_message) or True

    def load(self, unet_name, weight_dtype=AS_STORED):
        path = model_folders.chosen_path(UNET_FOLDER, unet_name, self.TITLE, _no_file_message)
        with reported_as(self.TITLE):
            unet = load_unet(path)
        dtype = WEIGHT_DTYPES[weight_dtype]
        return (build_model(unet if dtype is None else unet.to(dtype)),)


def _with(conditioning: list, extra: dict) -> list:
    return [[cond, {**options, **extra}] for cond, options in conditioning]


class I2VGenXLConditioning:
    TITLE = CONDITIONING_NODE
    DESCRIPTION = ("Adds the start image to the text conditioning as I2VGen-XL expects: its CLIP image embedding "
                   "(zero in the negative, as the reference), its VAE latent (in both) and the fps; returns the "
                   "empty video LATENT for KSampler.")

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 16, "max": 4096, "step": 8}
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "CLIPTextEncode with the OpenCLIP ViT-H text encoder"}),
            "negative": ("CONDITIONING", {"tooltip": "the negative prompt (VGen's default in the workflows)"}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "OpenCLIP ViT-H-14 vision model (CLIPVisionLoader)"}),
            "vae": ("VAE", {"tooltip": "the SD 2.1 / SD1.5 KL-f8 VAE"}),
            "image": ("IMAGE", {"tooltip": "start image (first frame used); scaled to cover the size and "
                                           "centre-cropped"}),
            "width": ("INT", {"default": 640, "tooltip": "video width in pixels (native 1280)", **size}),
            "height": ("INT", {"default": 352, "tooltip": "video height in pixels (native 704)", **size}),
            "frames": ("INT", {"default": 16, "min": 2, "max": 64, "tooltip": "frames of the clip (trained: 16)"}),
            "fps": ("INT", {"default": 16, "min": 1, "max": 60, "tooltip": "fps condition (default 16)"}),
        }}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = category("I2VGen-XL")

    def encode(self, positive, negative, clip_vision, vae, image, width, height, frames, fps):
        positive, negative = image_conditioning(self.TITLE, positive, negative, clip_vision, vae, image, width,
                                                height, frames, fps)
        empty = torch.zeros(frames, LATENT_CHANNELS, height // 8, width // 8)
        return positive, negative, {"samples": empty}


def image_conditioning(node_title: str, positive: list, negative: list, clip_vision, vae, image: Tensor, width: int,
                       height: int, frames: int, fps: int) -> tuple[list, list]:
    """``positive``/``negative`` with I2VGen-XL's image paths added, from the first frame of ``image (B, H, W, C)``
    scaled to cover ``width × height`` pixels and centre-cropped: its VAE latent (both branches), its CLIP image
    embedding (zero in the negative, as the reference), ``fps`` and the clip's ``frames``. Errors name
    ``node_title``."""
    if width % 8 or height % 8:
        raise input_error(node_title, f"width/height {width}×{height}: give multiples of 8 (the VAE's factor).")
    if frames < 2:
        raise input_error(node_title, f"frames is {frames}; I2VGen-XL makes clips of 2 or more (16 trained).")
    text_width = positive[0][0].shape[-1]
    embedding = clip_vision.encode_image(image[:1, :, :, :3])["image_embeds"].float()
    if embedding.shape[-1] != text_width:
        raise input_error(node_title, f"clip_vision gives {embedding.shape[-1]}-wide image embeddings but the "
                                      f"text is {text_width} wide; I2VGen-XL takes OpenCLIP ViT-H-14 (1024) for "
                                      "both – load that CLIP vision model (not ViT-L / ViT-G).")
    first = cover_crop(image[:1, :, :, :3], width, height)
    latent = vae.encode(first).float() * comfy.latent_formats.SD15().scale_factor
    shared = {IMAGE_LATENT: latent, FPS: torch.tensor([float(fps)]), FRAMES: torch.tensor([float(frames)])}
    return (_with(positive, {**shared, IMAGE_EMBEDDING: embedding}),
            _with(negative, {**shared, IMAGE_EMBEDDING: torch.zeros_like(embedding)}))


NODE_CLASSES = {node_id("LoadI2VGenXLModel"): LoadI2VGenXLModel,
                node_id("I2VGenXLConditioning"): I2VGenXLConditioning}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
