"""Nodes: the faithful Follow-Your-Click model (methods.md §5) as a native ComfyUI MODEL, and its conditioning.

*Load Follow-Your-Click Model* builds, from the user's SD1.5 MODEL and a Follow-Your-Click checkpoint, a new
ComfyUI model of its own (ComfyUI's model management loads, offloads and counts it; it holds its own copy of the
UNet weights, the base MODEL's weight patches such as LoRAs applied): ComfyUI's SD1.5 UNet with a 9-channel
``conv_in``, every UNet weight the checkpoint carries in place of the base's, the fps and motion-strength
embeddings added to the time embedding, v-prediction on the linear-β schedule rescaled to zero terminal SNR, and
the checkpoint's v1-style motion modules placed as *Apply Motion Model* places them (cross-frame GroupNorm; the
patcher injection keeps DynamicVRAM's backups away from them). *Follow-Your-Click Conditioning* adds the 5
conditioning channels (mask | first-frame latent) and the two scalars to ComfyUI's CONDITIONING, the same for
both branches, and returns the empty video LATENT: the stock KSampler samples it.
"""
from __future__ import annotations

import inspect

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from torch import Tensor

from ..pix2gif_core.diffusion import noise_schedule
from ..pix2gif_core.diffusion.ldm_layout import unet_layout
from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.follow_your_click.first_frame_conditioning import (
    first_frame_conditioning,
    latent_region_mask,
    masked_first_frame,
)
from ..pix2gif_core.follow_your_click.model_checkpoint import (
    IN_CHANNELS,
    PE_LENGTH,
    SCALAR_EMBEDDINGS,
    FollowYourClickWeights,
    ldm_unet_overrides,
    load_follow_your_click_checkpoint,
)
from ..pix2gif_core.follow_your_click.scalar_embedding import ScalarEmbedding
from ..pix2gif_core.i2vgen_xl.conditioning import cover_crop
from . import model_folders
from .animatediff_injection import MOTION_MODEL_KEY, LoadedMotionModel, inject
from .conventions import LATENT_CHANNELS, category, display_name, input_error, managed_model, node_id, reported_as

FOLLOW_YOUR_CLICK_MODELS = "follow_your_click"
CONDITIONING_NODE = "Follow-Your-Click Conditioning"
#: conditioning keys (CONDITIONING options → model conds → UNet keyword arguments)
CONDITIONING, FPS, MOTION = "fyc_first_frame", "fyc_fps", "fyc_motion_strength"
SCALARS = dict(zip(SCALAR_EMBEDDINGS, (FPS, MOTION)))
model_folders.register(FOLLOW_YOUR_CLICK_MODELS)


class FollowYourClickSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
    """v-prediction on linear β 0.00085–0.012 (diffusers "linear") rescaled to zero terminal SNR (every host)."""

    def __init__(self):
        super().__init__(None)
        self.set_sigmas(noise_schedule.zero_terminal_snr_sigmas(noise_schedule.betas("sqrt_linear")).float())


class FollowYourClickUNet(UNetModel):
    """ComfyUI's UNet with the fps and motion-strength embeddings (``fps_embedding``, ``motion_embedding``, built
    with the host's operations) added to its time embedding; ``x`` arrives with its 9 channels (ComfyUI concatenates
    ``c_concat``), the scalars as keyword arguments."""

    def __init__(self, *args, operations, device=None, **kwargs):
        super().__init__(*args, operations=operations, device=device, **kwargs)
        for name in SCALAR_EMBEDDINGS:
            setattr(self, name, ScalarEmbedding(self.model_channels, self.time_embed[0].out_features,
                                                linear=operations.Linear, dtype=self.dtype, device=device))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        scalars = {name: kwargs.pop(key, None) for name, key in SCALARS.items()}
        if any(value is None for value in scalars.values()) or x.shape[1] != self.in_channels:
            raise Pix2GifInputError(
                f"model: this is the Follow-Your-Click UNet ({self.in_channels} input channels); pass positive and "
                f"negative through the '{CONDITIONING_NODE}' node and sample its LATENT – it has no photo otherwise.")
        added = sum(getattr(self, name)(value, x.dtype) for name, value in scalars.items())
        hook = self.time_embed.register_forward_hook(lambda _module, _inputs, embedding: embedding + added)
        try:
            return super().forward(x, timesteps=timesteps, context=context, y=y, control=control,
                                   transformer_options=transformer_options, **kwargs)
        finally:
            hook.remove()


class FollowYourClickModel(comfy.model_base.BaseModel):
    """The ComfyUI model around :class:`FollowYourClickUNet`: v-prediction, zero-SNR sigmas, SD1.5 latent format;
    the conditioning node's channels become ``c_concat``, its scalars UNet keyword arguments."""

    def __init__(self, model_config, device: torch.device | None = None):
        super().__init__(model_config, comfy.model_base.ModelType.V_PREDICTION, device=device,
                         unet_model=FollowYourClickUNet)
        self.model_sampling = FollowYourClickSampling()

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        conditioning, noise = kwargs.get(CONDITIONING), kwargs.get("noise")
        if conditioning is None:
            return out
        if noise is not None and (noise.shape[0], *noise.shape[2:]) != (conditioning.shape[0], *conditioning.shape[2:]):
            raise Pix2GifInputError(
                f"[KSampler] latent_image: {noise.shape[0]} frames of {noise.shape[-1]}×{noise.shape[-2]} latents, but "
                f"the '{CONDITIONING_NODE}' node made {conditioning.shape[0]} of {conditioning.shape[-1]}×"
                f"{conditioning.shape[-2]}; sample the LATENT that node returns.")
        out["c_concat"] = comfy.conds.CONDNoiseShape(conditioning)
        for key in (FPS, MOTION):
            out[key] = comfy.conds.CONDRegular(kwargs[key])
        return out


def _check_base(model) -> None:
    """Refuse a MODEL that is no plain SD1.5 text-to-image UNet."""
    carried = model.model_options.get("transformer_options", {}).get(MOTION_MODEL_KEY)
    if carried is not None:
        raise Pix2GifInputError(
            f"model: it already carries motion model '{carried.name}'; the Follow-Your-Click checkpoint brings its "
            "own motion modules – connect the SD1.5 checkpoint's MODEL directly.")
    channels = model.model.model_config.unet_config.get("in_channels")
    if not isinstance(model.model.diffusion_model, UNetModel) or channels != LATENT_CHANNELS or \
            not isinstance(model.model.latent_format, comfy.latent_formats.SD15):
        raise Pix2GifInputError(
            "model: Follow-Your-Click was fine-tuned from Stable Diffusion 1.5; connect an SD1.5 checkpoint's MODEL "
            f"(a 4-channel text-to-image UNet), not this {type(model.model).__name__} with {channels} input channels.")


def _base_unet_state(model) -> dict[str, Tensor]:
    """The MODEL's UNet weights as it samples: loaded first with its own weight patches (LoRAs) applied – not
    those of another MODEL on the same base that may be loaded – as Save Checkpoint does."""
    load = comfy.model_management.load_models_gpu
    load([model], **({"force_patch_weights": True} if "force_patch_weights" in inspect.signature(load).parameters
                     else {}))
    return model.model.diffusion_model.state_dict()


def build_model(base, weights: FollowYourClickWeights, name: str):
    """The Follow-Your-Click MODEL from the SD1.5 MODEL ``base`` and the checkpoint's ``weights``."""
    _check_base(base)
    source = f"ckpt_name '{name}'"
    base_state = _base_unet_state(base)
    overrides = ldm_unet_overrides(weights.unet, unet_layout(base_state, "the MODEL's UNet"), source)
    overrides |= {f"{embedding}.{key}": tensor for embedding, part in weights.scalar_embeddings.items()
                  for key, tensor in part.items()}
    config = object.__new__(type(base.model.model_config))  # the base's config (dtype, manual cast, latent format)
    config.__dict__.update(vars(base.model.model_config))  # copied by hand: configs answer None to any attribute
    config.unet_config = {**config.unet_config, "in_channels": IN_CHANNELS}
    model = FollowYourClickModel(config, device=comfy.model_management.unet_offload_device())
    state, problems = {}, []
    for key, own in model.diffusion_model.state_dict().items():
        given = overrides.get(key, base_state.get(key))
        if given is None or given.shape != own.shape:
            problems.append(f"{key}: {'missing' if given is None else tuple(given.shape)} vs {tuple(own.shape)}")
        else:
            state[key] = given
    if problems:
        raise Pix2GifInputError(
            f"{source} does not fit the MODEL's UNet ({len(problems)} weights: {'; '.join(problems[:5])}); the "
            "checkpoint belongs to another base model – connect the SD1.5 checkpoint it was fine-tuned from.")
    model.diffusion_model.load_state_dict(state, strict=True)
    patcher = managed_model(model, comfy.model_management.get_torch_device(),
                            comfy.model_management.unet_offload_device())
    return inject(patcher, LoadedMotionModel(name, weights.motion_modules), key_scale=1.0, cross_frame_groupnorm=True,
                  beta_schedule=None, unet_in_channels=IN_CHANNELS)


def _no_file_message() -> str:
    where = " or ".join(model_folders.folders(FOLLOW_YOUR_CLICK_MODELS))
    return (f"no Follow-Your-Click checkpoint found. Put one (the fine-tuned UNet with 9 input channels, motion "
            f"modules and fps/motion embeddings) into {where} and press Refresh. Its authors never published theirs "
            "(Follow-Your-Click issue #18); without one use Click Mask + Regional Motion with public weights")


class LoadFollowYourClickModel:
    TITLE = "Load Follow-Your-Click Model"
    DESCRIPTION = ("The faithful Follow-Your-Click model: your SD1.5 MODEL + a Follow-Your-Click checkpoint "
                   "(models/follow_your_click; .safetensors, or .ckpt read with weights_only) → a MODEL with the "
                   "9-channel input, the checkpoint's UNet weights and motion modules, fps and motion-strength "
                   "embeddings, v-prediction on the zero-terminal-SNR schedule. Sample it with KSampler after the "
                   "Follow-Your-Click Conditioning node. The authors' weights were never published (issue #18).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "the SD1.5 checkpoint Follow-Your-Click was fine-tuned from"}),
            "ckpt_name": (model_folders.files(FOLLOW_YOUR_CLICK_MODELS),
                          {"tooltip": f"File in models/{FOLLOW_YOUR_CLICK_MODELS}"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = category("Follow-Your-Click")

    @classmethod
    def VALIDATE_INPUTS(cls, ckpt_name):
        return model_folders.choice_error(FOLLOW_YOUR_CLICK_MODELS, ckpt_name, "ckpt_name", cls.TITLE,
                                          _no_file_message) or True

    def load(self, model, ckpt_name):
        path = model_folders.chosen_path(FOLLOW_YOUR_CLICK_MODELS, ckpt_name, self.TITLE, _no_file_message)
        with reported_as(self.TITLE):
            return (build_model(model, load_follow_your_click_checkpoint(path, f"ckpt_name '{ckpt_name}'"),
                                ckpt_name),)


def _region(mask: Tensor | None, image: Tensor, width: int, height: int, title: str) -> Tensor | None:
    """The MASK's first mask cropped like the image → ``(height/8, width/8)`` of 0/1; None without a mask."""
    if mask is None:
        return None
    first = mask.reshape(-1, *mask.shape[-2:])[0]
    if tuple(first.shape) != tuple(image.shape[1:3]):
        raise input_error(title, f"mask is {first.shape[-1]}×{first.shape[-2]} but the image is {image.shape[2]}×"
                                 f"{image.shape[1]}; give the mask of this image (e.g. Click Mask on it) – both are "
                                 "scaled and cropped to width × height together.")
    if not bool((first > 0).any()):
        raise input_error(title, "mask covers nothing, so nothing would move; mask the object to animate, or leave "
                                 "mask unconnected (the model then chooses what moves).")
    cropped = cover_crop(first[None, :, :, None], width, height)[0, :, :, 0]
    return latent_region_mask(cropped, (height // 8, width // 8))


class FollowYourClickConditioning:
    TITLE = CONDITIONING_NODE
    DESCRIPTION = ("Adds the photo to the text conditioning as Follow-Your-Click expects: per frame the UNet reads "
                   "the noisy latent, the region mask (on every frame; without a mask 1 on frame 1 only) and the "
                   "photo's VAE latent on frame 1 (zeros on the others), the same in both branches, plus the fps "
                   "and motion-strength numbers; returns the empty video LATENT for KSampler. The photo and mask "
                   "are scaled to cover width × height and centre-cropped, as the official script does.")

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 64, "max": 4096, "step": 8}
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "the motion prompt, e.g. 'the dog wags its tail'"}),
            "negative": ("CONDITIONING",),
            "vae": ("VAE", {"tooltip": "the SD1.5 VAE"}),
            "image": ("IMAGE", {"tooltip": "the photo (first image used): the clip's first frame"}),
            "width": ("INT", {"default": 512, "tooltip": "video width in pixels (trained: 512)", **size}),
            "height": ("INT", {"default": 512, "tooltip": "video height in pixels (trained: 512)", **size}),
            "frames": ("INT", {"default": 16, "min": 2, "max": 64,
                               "tooltip": f"frames of the clip (trained: 16; at most {PE_LENGTH}, the motion "
                                          "modules' positions)"}),
            "fps": ("INT", {"default": 2, "min": 1, "max": 60,
                            "tooltip": "fps condition (official default 2; trained on frame strides 2–24)"}),
            "motion_strength": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                          "tooltip": "how much the region moves: the mean optical-flow magnitude the "
                                                     "model was conditioned on (official default 4)"}),
            "first_frame_masking": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                              "tooltip": "fraction of the photo's latent cells hidden from the model "
                                                         "(0 = off; 0.5 = the official --mask_first_frame)"}),
            "masking_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                     "tooltip": "which cells first_frame_masking hides"}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "the region that moves (Click Mask), the image's size; none: the model "
                                         "decides from the prompt"}),
        }}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = category("Follow-Your-Click")

    def encode(self, positive, negative, vae, image, width, height, frames, fps, motion_strength,
               first_frame_masking, masking_seed, mask=None):
        if width % 8 or height % 8:
            raise input_error(self.TITLE, f"width/height {width}×{height}: give multiples of 8 (the VAE's factor).")
        if frames > PE_LENGTH:
            raise input_error(self.TITLE, f"frames is {frames}, more than the {PE_LENGTH} positions of "
                                          f"Follow-Your-Click's v1-style motion modules; give at most {PE_LENGTH} "
                                          "(16 as trained).")
        region = _region(mask, image, width, height, self.TITLE)
        photo = cover_crop(image[:1, :, :, :3], width, height)
        latent = comfy.latent_formats.SD15().process_in(vae.encode(photo).float())[0]
        if first_frame_masking > 0:
            with reported_as(self.TITLE):
                latent = masked_first_frame(latent, first_frame_masking, torch.Generator().manual_seed(masking_seed))
        extra = {CONDITIONING: first_frame_conditioning(latent, frames, region),
                 FPS: torch.tensor([float(fps)]), MOTION: torch.tensor([float(motion_strength)])}
        empty = torch.zeros(frames, LATENT_CHANNELS, *latent.shape[-2:])
        return ([[cond, {**options, **extra}] for cond, options in positive],
                [[cond, {**options, **extra}] for cond, options in negative], {"samples": empty})


NODE_CLASSES = {node_id("LoadFollowYourClickModel"): LoadFollowYourClickModel,
                node_id("FollowYourClickConditioning"): FollowYourClickConditioning}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
