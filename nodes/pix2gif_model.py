"""Node: load a Pix2Gif Lightning checkpoint as a ComfyUI MODEL, CLIP, VAE and the Pix2Gif motion components.

The UNet is built from the architecture its weights imply (``ldm_layout``): ComfyUI's own detection only knows the
full-size SD1.5 layout and would misread Pix2Gif's 12-channel input as an inpainting model. The EMA UNet is used
by default, as in the official inference. The VAE encodes with the posterior *mode*, as Pix2Gif does (ComfyUI
2024-03 would sample the posterior; later versions already take the mode).
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import torch

from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.diffusion.ldm_layout import (
    UNET_HEADS,
    VAE_RESOLUTION,
    ClipTextLayout,
    UNetLayout,
    clip_text_layout,
    clip_text_state,
    is_kl_vae,
    kl_vae_layout,
    unet_layout,
)
from ..pix2gif_core.weights_file import read_state_dict_file
from ..pix2gif_core.pix2gif.checkpoint import (
    Pix2GifWeights,
    build_flownet,
    build_interval_embedding,
    split_pix2gif_checkpoint,
)
from ..pix2gif_core.pix2gif.flownet import FlowNet, IntervalEmbedding
from . import model_folders
from .conventions import category, display_name, managed_model, node_id, reported_as

PIX2GIF_MOTION_TYPE = "PIX2GIF_MOTION"
CHECKPOINTS = "checkpoints"
_CLIP_PROJECTION = "text_projection.weight"
_SHOWN = 5


@dataclass(frozen=True)
class Pix2GifMotion:
    """The Pix2Gif parts ComfyUI has no type for (``PIX2GIF_MOTION``): FlowNet and interval embedding, eval mode,
    with ``patcher`` making both one model of ComfyUI's model management."""

    name: str
    flownet: FlowNet
    interval_embedding: IntervalEmbedding
    patcher: comfy.model_patcher.ModelPatcher

    @classmethod
    def of(cls, name: str, flownet: FlowNet, interval_embedding: IntervalEmbedding) -> "Pix2GifMotion":
        modules = torch.nn.ModuleDict({"flownet": flownet, "interval_embedding": interval_embedding})
        return cls(name, flownet, interval_embedding,
                   managed_model(modules, comfy.model_management.get_torch_device(),
                                 comfy.model_management.unet_offload_device()))

    def load(self) -> torch.device:
        """Load both modules through ComfyUI's model management; returns the device they compute on."""
        comfy.model_management.load_models_gpu([self.patcher])
        return self.patcher.load_device


class _Pix2GifUNetConfig(comfy.supported_models_base.BASE):
    """An SD1.x-family model config whose UNet shape comes from the checkpoint (8 heads, SD1.5 latent space)."""

    unet_extra_config = {"num_heads": UNET_HEADS, "num_head_channels": -1}
    latent_format = comfy.latent_formats.SD15


def comfy_unet_config(layout: UNetLayout) -> dict:
    """ComfyUI ``UNetModel`` arguments for ``layout`` (its output depths are popped from the end of the list)."""
    return dict(
        image_size=32, in_channels=layout.in_channels, out_channels=layout.out_channels,
        model_channels=layout.model_channels, num_res_blocks=list(layout.num_res_blocks),
        channel_mult=list(layout.channel_mult), transformer_depth=list(layout.input_transformer_depth),
        transformer_depth_output=list(reversed(layout.output_transformer_depth)),
        transformer_depth_middle=layout.middle_transformer_depth or -1, context_dim=layout.context_dim,
        use_linear_in_transformer=layout.linear_projection, adm_in_channels=None, use_spatial_transformer=True,
        legacy=False, use_checkpoint=False, use_temporal_resblock=False, use_temporal_attention=False)


def _require_fit(what: str, missing, unexpected) -> None:
    """Raise unless a model took exactly the weights meant for it (ComfyUI loads with strict=False)."""
    problems = [f"{label}: {', '.join(sorted(keys)[:_SHOWN])}{' …' if len(keys) > _SHOWN else ''}"
                for label, keys in (("missing", list(missing)), ("unexpected", list(unexpected))) if keys]
    if problems:
        raise Pix2GifInputError(f"{what} does not fit the architecture its own shapes imply "
                                f"({'; '.join(problems)}); the checkpoint is damaged or of an unsupported variant.")


def _only_with_source_channels(apply_model, args):
    """UNet function wrapper of the loaded MODEL: a clear error instead of a channel mismatch in another sampler."""
    if args["c"].get("c_concat") is None:
        raise Pix2GifInputError(
            "model: this is Pix2Gif's 12-channel UNet from 'Load Pix2Gif Model'; sample it with the 'Pix2Gif "
            "Sampler' node, which gives it the source image (KSampler and other samplers do not).")
    return apply_model(args["input"], args["timestep"], **args["c"])


def build_model(unet: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL (eps, SD1.5 noise schedule and latent format) holding exactly ``unet``; it samples only
    through the Pix2Gif Sampler."""
    config = _Pix2GifUNetConfig(comfy_unet_config(unet_layout(unet, "Pix2Gif UNet")))
    parameters = sum(tensor.numel() for tensor in unet.values())
    load_device = comfy.model_management.get_torch_device()
    dtype = comfy.model_management.unet_dtype(model_params=parameters,
                                              supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(
        dtype, load_device, config.supported_inference_dtypes))
    model = comfy.model_base.BaseModel(
        config, device=comfy.model_management.unet_inital_load_device(parameters, dtype))
    _require_fit("the UNet ('model.diffusion_model.*')", *model.diffusion_model.load_state_dict(unet, strict=False))
    patcher = managed_model(model, load_device, comfy.model_management.unet_offload_device())
    patcher.set_model_unet_function_wrapper(_only_with_source_channels)
    return patcher


@functools.cache
def _private_folder() -> str:
    """A folder of this process only (``mkdtemp``: a new name, mode 0700), removed at exit."""
    folder = tempfile.mkdtemp(prefix="pix2gif-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _clip_config_file(layout: ClipTextLayout) -> str:
    """ComfyUI's CLIP-L config with ``layout``'s sizes, as a file (ComfyUI 2024-03 reads configs from paths only).

    Written whole (temporary name, then renamed) into this process's private folder: no name another user can
    plant a link at, no cache a full disk can leave truncated for the next run."""
    with open(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")) as f:
        config = json.load(f)
    config.update(vocab_size=layout.vocab_size, hidden_size=layout.hidden_size, projection_dim=layout.hidden_size,
                  num_hidden_layers=layout.num_hidden_layers, intermediate_size=layout.intermediate_size,
                  num_attention_heads=layout.num_attention_heads,
                  max_position_embeddings=layout.max_position_embeddings)
    text = json.dumps(config, sort_keys=True)
    path = os.path.join(_private_folder(), f"clip_{hashlib.sha1(text.encode()).hexdigest()[:16]}.json")
    if not os.path.isfile(path):
        handle, partial = tempfile.mkstemp(dir=_private_folder(), suffix=".partial")
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(partial, path)
    return path


def build_clip(clip_weights: dict[str, torch.Tensor]) -> comfy.sd.CLIP:
    """An SD1-style ComfyUI CLIP (CLIP tokenizer, last hidden layer) holding exactly the text-encoder weights.

    The Hugging Face text model has no projection; ComfyUI's has one for the pooled output (unused by SD1.x),
    set to the identity here (what ComfyUI 2024-03 initialises it to; later versions leave it uninitialised).
    """
    what = "the CLIP text encoder ('cond_stage_model.transformer.*')"
    weights = clip_text_state(clip_weights)
    layout = clip_text_layout(weights, what)
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    target.params = {"clip_model": comfy.sd1_clip.SDClipModel, "textmodel_json_config": _clip_config_file(layout)}
    with torch.no_grad():  # ComfyUI 2024-03 writes the projection in place while building
        clip = comfy.sd.CLIP(target)
    missing, unexpected = clip.load_sd(weights)
    _require_fit(what, [key for key in missing if key != _CLIP_PROJECTION], unexpected)
    with torch.no_grad():
        clip.cond_stage_model.clip_l.transformer.text_projection.weight.copy_(torch.eye(layout.hidden_size))
    return clip


def _vae_config(vae_weights: dict[str, torch.Tensor]) -> dict | None:
    """ComfyUI's ``AutoencoderKL`` arguments for KL weights of any width; None lets ComfyUI detect other kinds."""
    if not is_kl_vae(vae_weights):
        return None
    layout = kl_vae_layout(vae_weights, "the VAE ('first_stage_model.*')")
    ddconfig = dict(double_z=True, z_channels=layout.z_channels, resolution=VAE_RESOLUTION,
                    in_channels=layout.in_channels, out_ch=layout.out_ch, ch=layout.ch, ch_mult=list(layout.ch_mult),
                    num_res_blocks=layout.num_res_blocks, attn_resolutions=list(layout.attn_resolutions),
                    dropout=0.0)
    return {"params": {"ddconfig": ddconfig, "embed_dim": layout.embed_dim}}


def build_vae(vae_weights: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's VAE holding the weights (KL of any width, or a kind ComfyUI detects), encoding with the
    posterior mode."""
    vae = comfy.sd.VAE(sd=vae_weights, config=_vae_config(vae_weights))
    _require_fit("the VAE ('first_stage_model.*')", set(vae.first_stage_model.state_dict()) - set(vae_weights), ())
    regularization = getattr(vae.first_stage_model, "regularization", None)
    if regularization is not None and hasattr(regularization, "sample"):
        regularization.sample = False
    return vae


def load_pix2gif(path: str, name: str, use_ema: bool):
    """(MODEL, CLIP, VAE, Pix2GifMotion) from the checkpoint at ``path``."""
    weights: Pix2GifWeights = split_pix2gif_checkpoint(read_state_dict_file(path), use_ema=use_ema,
                                                       source=f"ckpt_name '{name}'")
    motion = Pix2GifMotion.of(name, build_flownet(weights), build_interval_embedding(weights))
    return build_model(weights.unet), build_clip(weights.clip), build_vae(weights.vae), motion


def _missing_checkpoint_message() -> str:
    where = " or ".join(model_folders.folders(CHECKPOINTS))
    return (f"no checkpoint found. Put a Pix2Gif training checkpoint (.ckpt with 'model_ema.*', 'flownet.*' and "
            f"'interval_embedding.*') into {where} and press Refresh")


class LoadPix2GifModel:
    TITLE = "Load Pix2Gif Model"
    DESCRIPTION = ("Loads a Pix2Gif checkpoint (PyTorch-Lightning .ckpt, or .safetensors with the same keys) from "
                   "models/checkpoints: the 12-channel UNet (EMA weights by default, as the paper), CLIP, VAE, and "
                   "the motion components (FlowNet + magnitude embedding) for the Pix2Gif Sampler.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (model_folders.files(CHECKPOINTS), {"tooltip": "File in models/checkpoints"}),
            "use_ema": ("BOOLEAN", {"default": True,
                                    "tooltip": "Use the EMA UNet ('model_ema.*') as the official inference does; "
                                               "off for files that store EMA weights under 'model.diffusion_model.'"}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE", PIX2GIF_MOTION_TYPE)
    RETURN_NAMES = ("model", "clip", "vae", "pix2gif_motion")
    FUNCTION = "load"
    CATEGORY = category("Pix2Gif")

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name):
        return model_folders.choice_error(CHECKPOINTS, ckpt_name, "ckpt_name", cls.TITLE,
                                          _missing_checkpoint_message) or True

    def load(self, ckpt_name, use_ema):
        path = model_folders.chosen_path(CHECKPOINTS, ckpt_name, self.TITLE, _missing_checkpoint_message)
        with reported_as(self.TITLE):
            return load_pix2gif(path, ckpt_name, use_ema)


NODE_CLASSES = {node_id("LoadPix2GifModel"): LoadPix2GifModel}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
