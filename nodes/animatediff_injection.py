"""ComfyUI glue that turns a cloned SD1.5 MODEL into an AnimateDiff video model, without global monkeypatching.

Everything goes through the clone's own ModelPatcher mechanisms, which ComfyUI applies when it loads the model
for sampling and reverts afterwards:
- object patches replace UNet blocks by copies that hold the block's original layers plus a motion module
  (and, for v1 modules, ResBlock GroupNorms by cross-frame GroupNorms), and ``model_sampling`` by the beta
  schedule AnimateDiff was trained with;
- a UNet function wrapper tells the injected layers, before each UNet call, how many frames a video has (the
  batch is ``len(cond_or_uncond)`` videos of F frames, so cond and uncond never attend to each other) and which
  temporal-attention variants other nodes asked for through ``transformer_options``.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, TimestepEmbedSequential, Upsample

from ..pix2gif_core.diffusion import noise_schedule
from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.animatediff.injection import CrossFrameGroupNorm, FrameContext, InjectedMotionModule
from ..pix2gif_core.animatediff.motion_module import MotionModuleSet, unet_position

#: transformer_options key under which other nodes put ``{motion-module name: temporal attention variant}``
TEMPORAL_VARIANTS_KEY = "pix2gif_temporal_variants"
#: transformer_options key under which other nodes put callables ``(latent_hw) -> {name: variant}``, evaluated
#: before every UNet call (for variants that depend on the latent size, e.g. Motion-Inversion value embeddings)
TEMPORAL_VARIANT_PROVIDERS_KEY = "pix2gif_temporal_variant_providers"
#: transformer_options key marking a MODEL that carries a motion model: ``{"name", "version"}``
MOTION_MODEL_KEY = "pix2gif_motion_model"


@dataclass(frozen=True)
class LoadedMotionModel:
    """What the loader node hands to the apply node (ComfyUI type ``PIX2GIF_MOTION_MODEL``)."""

    name: str
    modules: MotionModuleSet


def _block_path(kind: str, index: int) -> str:
    return "diffusion_model.middle_block" if kind == "middle" else f"diffusion_model.{kind}_blocks.{index}"


def _original(model, path: str):
    """The unpatched object at ``path``: a loaded model may still carry another clone's object patches."""
    if path in model.object_patches_backup:
        return model.object_patches_backup[path]
    obj = model.model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _own_layers(model, kind: str, index: int, motion_name: str) -> list[tuple[str, object]]:
    """The block's original (key, layer) pairs, without a motion module a still-loaded clone may have put there."""
    unet = model.model.diffusion_model
    if kind != "middle" and index >= len(getattr(unet, f"{kind}_blocks")):
        raise Pix2GifInputError(
            f"motion model '{motion_name}' expects an SD1.5 UNet ({kind}_blocks.{index} exists there) but this "
            f"MODEL has only {len(getattr(unet, f'{kind}_blocks'))} {kind} blocks (an SDXL or other non-SD1.5 "
            "model?); use an SD1.5 checkpoint with SD1.5 AnimateDiff motion modules")
    block = _original(model, _block_path(kind, index))
    return [(key, layer) for key, layer in block.named_children() if not isinstance(layer, InjectedMotionModule)]


def _channels_of(layer) -> int | None:
    if isinstance(layer, SpatialTransformer):
        return layer.in_channels
    if isinstance(layer, ResBlock):
        return layer.out_channels
    return None


def _with_motion_module(layers: list[tuple[str, object]], module: InjectedMotionModule, expected_channels: int,
                        where: str, motion_name: str) -> TimestepEmbedSequential:
    """A new block holding ``layers`` under their own keys, with ``module`` (key ``motion_module``) after the
    last non-upsampling layer – or, in the middle block, right after the attention. Keeping the original keys
    keeps every object path into the block (e.g. ``middle_block.2.in_layers.0``) valid in both trees."""
    insert_at = len(layers) - 1 if isinstance(layers[-1][1], Upsample) else len(layers)
    if where == "diffusion_model.middle_block":
        insert_at = next(i for i, (_, layer) in enumerate(layers) if isinstance(layer, SpatialTransformer)) + 1
    channels = _channels_of(layers[insert_at - 1][1])
    if channels != expected_channels:
        raise Pix2GifInputError(
            f"motion model '{motion_name}' has {expected_channels} channels for {module.name} but the MODEL's "
            f"{where} has {channels}: the motion model does not belong to this base model family "
            "(e.g. an SDXL checkpoint with an SD1.5 motion module); pick matching files")
    return TimestepEmbedSequential(OrderedDict([*layers[:insert_at], ("motion_module", module), *layers[insert_at:]]))


def _cross_frame_norm_patches(model, context: FrameContext) -> dict[str, CrossFrameGroupNorm]:
    """Object patches turning every ResBlock GroupNorm, and the output GroupNorm, into cross-frame ones.

    The wrapped norms are the UNet's own (unwrapped if a still-loaded clone left a cross-frame norm in place).
    """
    unet = model.model.diffusion_model
    block_paths = [f"diffusion_model.input_blocks.{i}" for i in range(len(unet.input_blocks))]
    block_paths += ["diffusion_model.middle_block"]
    block_paths += [f"diffusion_model.output_blocks.{i}" for i in range(len(unet.output_blocks))]
    norms = {"diffusion_model.out.0": unet.out[0]}
    for block_path in block_paths:
        for key, layer in _original(model, block_path).named_children():
            if isinstance(layer, ResBlock):
                norms[f"{block_path}.{key}.in_layers.0"] = layer.in_layers[0]
                norms[f"{block_path}.{key}.out_layers.0"] = layer.out_layers[0]
    return {path: CrossFrameGroupNorm(norm.norm if isinstance(norm, CrossFrameGroupNorm) else norm, context)
            for path, norm in norms.items()}


def _frame_wrapper(context: FrameContext, previous):
    """UNet function wrapper: set F and the variants for this call, then run the (possibly wrapped) UNet."""

    def wrapper(apply_model, args):
        x, cond_or_uncond = args["input"], args["cond_or_uncond"]
        context.video_length = x.shape[0] // max(len(cond_or_uncond), 1)
        if context.video_length < 2:
            raise Pix2GifInputError(
                "[Apply Motion Model] the latent has 1 frame; AnimateDiff animates a batch of frames: set the "
                "latent batch size (frames) to 2 or more, 16 is what the motion modules were trained on")
        transformer_options = args["c"].get("transformer_options", {})
        context.variants = dict(transformer_options.get(TEMPORAL_VARIANTS_KEY, {}))
        for provider in transformer_options.get(TEMPORAL_VARIANT_PROVIDERS_KEY, ()):
            context.variants.update(provider(tuple(x.shape[-2:])))
        if previous is not None:
            return previous(apply_model, args)
        return apply_model(x, args["timestep"], **args["c"])

    return wrapper


def schedule_patch(model, schedule: str):
    """A copy of ``model``'s model_sampling on the ``schedule`` betas (noise_schedule names), for an object patch."""
    current = model.object_patches.get("model_sampling") or _original(model, "model_sampling")
    patched = copy.deepcopy(current)
    beta = noise_schedule.betas(schedule)
    patched._register_schedule(given_betas=beta, linear_start=noise_schedule.SD15_BETA_START,
                               linear_end=noise_schedule.SD15_BETA_END)
    return patched


def inject(model, motion: LoadedMotionModel, *, key_scale: float, cross_frame_groupnorm: bool,
           beta_schedule: str | None):
    """A patched clone of ``model`` running ``motion``'s modules; ``beta_schedule`` None keeps the model's."""
    options = model.model_options.get("transformer_options", {})
    if MOTION_MODEL_KEY in options:
        raise Pix2GifInputError(
            f"this MODEL already carries motion model '{options[MOTION_MODEL_KEY]['name']}'; apply one motion model "
            "per MODEL (connect the checkpoint's MODEL output instead)")
    patched = model.clone()
    context = FrameContext()
    for name, module in motion.modules.named_motion_modules():
        kind, index = unet_position(name)
        path = _block_path(kind, index)
        injected = InjectedMotionModule(name, module, context, key_scale=key_scale)
        layers = _own_layers(model, kind, index, motion.name)
        patched.add_object_patch(path, _with_motion_module(layers, injected, motion.modules.channels(name), path,
                                                           motion.name))
    if cross_frame_groupnorm:
        for path, norm in _cross_frame_norm_patches(model, context).items():
            patched.add_object_patch(path, norm)
    if beta_schedule is not None:
        patched.add_object_patch("model_sampling", schedule_patch(model, beta_schedule))
    patched.set_model_unet_function_wrapper(
        _frame_wrapper(context, model.model_options.get("model_function_wrapper")))
    patched.model_options.setdefault("transformer_options", {})[MOTION_MODEL_KEY] = {
        "name": motion.name, "version": motion.modules.config.version}
    return patched


def motion_model_info(model) -> dict:
    """``{"name", "version"}`` of the motion model a MODEL carries; clear error if it carries none."""
    info = model.model_options.get("transformer_options", {}).get(MOTION_MODEL_KEY)
    if info is None:
        raise Pix2GifInputError("the MODEL has no motion model: connect it through 'Apply Motion Model' first")
    return info


def injected_motion_modules(model) -> dict[str, InjectedMotionModule]:
    """The motion modules a motion-patched MODEL runs, by name (``down_blocks.0.motion_modules.0`` …)."""
    motion_model_info(model)
    return {layer.name: layer for block in model.object_patches.values() if isinstance(block, TimestepEmbedSequential)
            for layer in block.children() if isinstance(layer, InjectedMotionModule)}


def _motion_patched_clone(model):
    motion_model_info(model)
    patched = model.clone()
    return patched, patched.model_options.setdefault("transformer_options", {})


def set_temporal_variants(model, variants: dict):
    """A clone of a motion-patched ``model`` whose named motion modules use ``variants`` (merged with earlier)."""
    patched, transformer_options = _motion_patched_clone(model)
    transformer_options[TEMPORAL_VARIANTS_KEY] = {**transformer_options.get(TEMPORAL_VARIANTS_KEY, {}), **variants}
    return patched


def add_temporal_variant_provider(model, provider):
    """A clone of a motion-patched ``model`` that asks ``provider(latent_hw)`` for variants before each UNet call."""
    patched, transformer_options = _motion_patched_clone(model)
    transformer_options[TEMPORAL_VARIANT_PROVIDERS_KEY] = (*transformer_options.get(TEMPORAL_VARIANT_PROVIDERS_KEY, ()),
                                                           provider)
    return patched
