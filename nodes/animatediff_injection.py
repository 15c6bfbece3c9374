"""ComfyUI glue that turns a cloned SD1.5 MODEL into an AnimateDiff video model, without global monkeypatching.

Where the layers go: UNet blocks are replaced by copies that hold the block's own layers (under their own keys)
plus a motion module, and, for v1 modules, ResBlock GroupNorms by cross-frame GroupNorms. A UNet function wrapper
tells these layers, before each UNet call, how many frames a video has (the batch is ``len(cond_or_uncond)``
videos of F frames, so cond and uncond never attend to each other) and which temporal-attention variants and
per-position motion scale other nodes asked for through ``transformer_options``.

How they get there – chosen from what the host offers, so that ComfyUI's model management owns the weights:

- **ComfyUI ≥ 0.3 (patcher injections and additional models).** The layers are placed by a *patcher
  injection*: ComfyUI applies it once the MODEL is loaded and removes it before any unload, weight backup or
  restore. That is what keeps DynamicVRAM (``ModelPatcherDynamic``, on by default for NVIDIA since v0.33) from
  backing up motion weights by their path inside a replaced block and failing to restore them after the block
  is gone. The motion modules themselves are their own ``ModelPatcher`` (the host's ``CoreModelPatcher``, so
  DynamicVRAM applies to them too) attached as an *additional model*: ComfyUI loads, offloads and counts them
  with the MODEL, in the UNet's compute dtype. AnimateDiff-Evolved uses the same two mechanisms.
- **ComfyUI 2024-03 (neither exists).** The layers are object patches; ``patch_model`` moves the whole patched
  tree, motion modules included, and the MODEL's size is raised by the motion weights so memory estimates count
  them. That host has no DynamicVRAM.

The beta schedule stays an object patch (samplers read it before loading), as a copy of ``model_sampling`` with
its tables as plain tensors instead of buffers: DynamicVRAM backs up and restores every buffer by its path, and
would otherwise write the patched tables into the base model's own ``model_sampling`` on unload (as it does
for ComfyUI's own ModelSamplingDiscrete patch on v0.33).
"""
from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import comfy.model_management
import comfy.utils
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, TimestepEmbedSequential, Upsample

from ..pix2gif_core.animatediff.injection import CrossFrameGroupNorm, FrameContext, InjectedMotionModule
from ..pix2gif_core.animatediff.motion_module import MotionModuleSet, unet_position
from ..pix2gif_core.diffusion import noise_schedule
from ..pix2gif_core.errors import Pix2GifInputError
from .attention_backend import host_attention
from .conventions import managed_model

#: transformer_options key under which other nodes put ``{motion-module name: temporal attention variant}``
TEMPORAL_VARIANTS_KEY = "pix2gif_temporal_variants"
#: transformer_options key under which other nodes put callables ``(latent_hw) -> {name: variant}``, evaluated
#: before every UNet call (for variants that depend on the latent size, e.g. Motion-Inversion value embeddings)
TEMPORAL_VARIANT_PROVIDERS_KEY = "pix2gif_temporal_variant_providers"
#: transformer_options key under which a node puts a callable ``(latent_hw) -> KeyScales`` (the per-position motion
#: scale of every temporal attention, e.g. Regional Motion's soft confinement), evaluated before every UNet call
TEMPORAL_KEY_SCALES_KEY = "pix2gif_temporal_key_scales"
#: transformer_options key of the :class:`MotionPlacement` a motion-patched MODEL carries
MOTION_MODEL_KEY = "pix2gif_motion_model"
#: key of the injection and of the additional model (ComfyUI ≥ 0.3)
MOTION_MODELS_KEY = "pix2gif_motion_modules"

#: ``path → object`` lookup into a BaseModel tree, e.g. ``"diffusion_model.input_blocks.1"``
Lookup = Callable[[str], object]


@dataclass(frozen=True)
class LoadedMotionModel:
    """What the loader node hands to the apply node (ComfyUI type ``PIX2GIF_MOTION_MODEL``).

    ``modules`` are the weights as read; copies in other dtypes (the UNet's compute dtype) are made once and kept.
    """

    name: str
    modules: MotionModuleSet
    _in_dtype: dict = field(default_factory=dict, compare=False, repr=False)

    def modules_in(self, dtype: torch.dtype) -> MotionModuleSet:
        if next(self.modules.parameters()).dtype == dtype:
            return self.modules
        if dtype not in self._in_dtype:
            self._in_dtype[dtype] = copy.deepcopy(self.modules).to(dtype)
        return self._in_dtype[dtype]


@dataclass
class MotionPlacement:
    """What a motion-patched MODEL carries in ``transformer_options[MOTION_MODEL_KEY]``, shared by its clones.

    ``modules`` maps names (``down_blocks.0.motion_modules.0`` …) to the layers that run them; ``frame_context``
    is what the frame wrapper fills before every UNet call.
    """

    name: str
    version: str
    pe_length: int
    modules: dict[str, InjectedMotionModule]
    frame_context: FrameContext

    def __deepcopy__(self, memo):  # ComfyUI 2024-03 deep-copies model_options on clone: share, do not copy
        return self


def _block_path(kind: str, index: int) -> str:
    return "diffusion_model.middle_block" if kind == "middle" else f"diffusion_model.{kind}_blocks.{index}"


def _original(model, path: str):
    """The unpatched object at ``path``: a loaded model may still carry another clone's object patches."""
    if path in model.object_patches_backup:
        return model.object_patches_backup[path]
    return comfy.utils.get_attr(model.model, path)


def _channels_of(layer) -> int | None:
    if isinstance(layer, SpatialTransformer):
        return layer.in_channels
    if isinstance(layer, ResBlock):
        return layer.out_channels
    return None


def _with_motion_module(block, module: InjectedMotionModule, expected_channels: int, where: str,
                        motion_name: str) -> TimestepEmbedSequential:
    """A new block holding ``block``'s layers under their own keys, with ``module`` (key ``motion_module``) after
    the last non-upsampling layer – or, in the middle block, right after the attention. Keeping the original keys
    keeps every object path into the block (e.g. ``middle_block.2.in_layers.0``) valid in both trees."""
    layers = [(key, layer) for key, layer in block.named_children() if not isinstance(layer, InjectedMotionModule)]
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


def _cross_frame_norms(lookup: Lookup, context: FrameContext) -> dict[str, CrossFrameGroupNorm]:
    """Every ResBlock GroupNorm and the output GroupNorm, as cross-frame ones (wrapping the UNet's own norms)."""
    unet = lookup("diffusion_model")
    block_paths = [f"diffusion_model.input_blocks.{i}" for i in range(len(unet.input_blocks))]
    block_paths += ["diffusion_model.middle_block"]
    block_paths += [f"diffusion_model.output_blocks.{i}" for i in range(len(unet.output_blocks))]
    norms = {"diffusion_model.out.0": lookup("diffusion_model.out.0")}
    for block_path in block_paths:
        for key, layer in lookup(block_path).named_children():
            if isinstance(layer, ResBlock):
                norms[f"{block_path}.{key}.in_layers.0"] = layer.in_layers[0]
                norms[f"{block_path}.{key}.out_layers.0"] = layer.out_layers[0]
    return {path: CrossFrameGroupNorm(norm.norm if isinstance(norm, CrossFrameGroupNorm) else norm, context)
            for path, norm in norms.items()}


def _placed_layers(lookup: Lookup, placement: MotionPlacement, modules: MotionModuleSet, motion_name: str,
                   cross_frame_groupnorm: bool) -> dict[str, torch.nn.Module]:
    """``path → layer`` replacing the blocks (and norms) of the tree ``lookup`` reads, built from its own layers."""
    unet = lookup("diffusion_model")
    layers = {}
    for name, injected in placement.modules.items():
        kind, index = unet_position(name)
        if kind != "middle" and index >= len(getattr(unet, f"{kind}_blocks")):
            raise Pix2GifInputError(
                f"motion model '{motion_name}' expects an SD1.5 UNet ({kind}_blocks.{index} exists there) but this "
                f"MODEL has only {len(getattr(unet, f'{kind}_blocks'))} {kind} blocks (an SDXL or other non-SD1.5 "
                "model?); use an SD1.5 checkpoint with SD1.5 AnimateDiff motion modules")
        path = _block_path(kind, index)
        layers[path] = _with_motion_module(lookup(path), injected, modules.channels(name), path, motion_name)
    if cross_frame_groupnorm:
        layers.update(_cross_frame_norms(lookup, placement.frame_context))
    return layers


def _injection(build: Callable[[Lookup], dict[str, torch.nn.Module]]):
    """A patcher injection placing ``build(live tree)`` when ComfyUI loads the MODEL and restoring on eject.

    Built from the live tree, so object patches other nodes made inside a block (applied first) are kept."""
    import comfy.patcher_extension  # ComfyUI ≥ 0.3 only

    replaced: dict[str, object] = {}

    def inject(patcher):
        for path, layer in build(lambda p: comfy.utils.get_attr(patcher.model, p)).items():
            replaced[path] = comfy.utils.get_attr(patcher.model, path)
            comfy.utils.set_attr(patcher.model, path, layer)

    def eject(patcher):
        for path, original in reversed(list(replaced.items())):
            comfy.utils.set_attr(patcher.model, path, original)
        replaced.clear()

    return comfy.patcher_extension.PatcherInjection(inject=inject, eject=eject)


def hosts_injections(model) -> bool:
    """Whether this ComfyUI has patcher injections and additional models (≥ 0.3; not 2024-03)."""
    return hasattr(model, "set_injections") and hasattr(model, "set_additional_models")


def attention_precision(model) -> torch.dtype | None:
    """The attention precision the MODEL's config declares (float32 for the SD2 family), None where it or the
    host declares none (2024-03)."""
    return model.model.model_config.unet_config.get("attn_precision")


def compute_dtype(model) -> torch.dtype:
    """The dtype the MODEL's UNet computes in (its manual-cast dtype, else its weights' dtype)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()


@functools.cache
def hosts_context_windows() -> bool:
    """Whether this ComfyUI has native context windows that work on a batch of frames (``Context Windows
    (Manual)``, dim 0). v0.3.75 has the node, but its step lookup compares the sampler's sigmas with the whole
    per-frame timestep batch and fails: probed here, on that very function."""
    import nodes

    if "ContextWindowsManual" not in nodes.NODE_CLASS_MAPPINGS:
        return False
    import comfy.context_windows

    handler = comfy.context_windows.IndexListContextHandler.__new__(comfy.context_windows.IndexListContextHandler)
    handler._step = 0
    try:
        handler.set_step(torch.ones(4), {"transformer_options": {"sample_sigmas": torch.tensor([2.0, 1.0, 0.0])}})
    except RuntimeError:
        return False
    return handler._step == 1


def _check_frames(frames: int, pe_length: int, window) -> None:
    """Refuse what the motion modules cannot attend over: 1 frame, or more frames than their position encoding."""
    if frames < 2:
        raise Pix2GifInputError(
            "[Apply Motion Model] the latent has 1 frame; AnimateDiff animates a batch of frames: set the "
            "latent batch size (frames) to 2 or more, 16 is what the motion modules were trained on")
    if frames <= pe_length:
        return
    if window is not None:
        anchor = " including the causal_window_fix frame" if getattr(window, "causal_anchor_index", -1) >= 0 else ""
        raise Pix2GifInputError(
            f"[Context Windows (Manual)] its windows hold {frames} frames{anchor}, more than the motion model's "
            f"{pe_length} positions: set context_length to at most {pe_length - (1 if anchor else 0)}")
    fix = ("add ComfyUI's 'Context Windows (Manual)' node after Apply Motion Model (context_length 16, overlap 4) "
           "to sample it in overlapping windows" if hosts_context_windows() else
           "update ComfyUI (v0.33 or later) for working context windows: this one has no context-window node that "
           "samples a batch of frames")
    raise Pix2GifInputError(
        f"[Apply Motion Model] the video has {frames} frames but the motion model has {pe_length} positions: "
        f"sample at most {pe_length} frames, or {fix}")


def _frame_wrapper(context: FrameContext, pe_length: int, previous):
    """UNet function wrapper: set F, the variants and the motion scale map for this call, then run the
    (possibly wrapped) UNet."""

    def wrapper(apply_model, args):
        x, cond_or_uncond = args["input"], args["cond_or_uncond"]
        transformer_options = args["c"].get("transformer_options", {})
        context.video_length = x.shape[0] // max(len(cond_or_uncond), 1)
        _check_frames(context.video_length, pe_length, transformer_options.get("context_window"))
        context.variants = dict(transformer_options.get(TEMPORAL_VARIANTS_KEY, {}))
        for provider in transformer_options.get(TEMPORAL_VARIANT_PROVIDERS_KEY, ()):
            context.variants.update(provider(tuple(x.shape[-2:])))
        key_scales = transformer_options.get(TEMPORAL_KEY_SCALES_KEY)
        context.key_scales = None if key_scales is None else key_scales(tuple(x.shape[-2:]))
        if previous is not None:
            return previous(apply_model, args)
        return apply_model(x, args["timestep"], **args["c"])

    return wrapper


def schedule_patch(model, schedule: str):
    """A copy of ``model``'s model_sampling on the ``schedule`` betas (noise_schedule names), for an object patch.

    Its tables are plain tensors, not buffers (see the module docstring); its methods move them as needed."""
    current = model.object_patches.get("model_sampling") or _original(model, "model_sampling")
    patched = copy.deepcopy(current)
    beta = noise_schedule.betas(schedule)
    patched._register_schedule(given_betas=beta, linear_start=noise_schedule.SD15_BETA_START,
                               linear_end=noise_schedule.SD15_BETA_END)
    for name, table in list(patched.named_buffers(recurse=False)):
        del patched._buffers[name]
        object.__setattr__(patched, name, table)
    return patched


def inject(model, motion: LoadedMotionModel, *, key_scale: float, cross_frame_groupnorm: bool,
           beta_schedule: str | None, unet_in_channels: int = 4):
    """A patched clone of ``model`` running ``motion``'s modules; ``beta_schedule`` None keeps the model's.

    ``unet_in_channels``: the UNet input the motion modules were trained with (4: a text-to-image SD1.5 UNet;
    Follow-Your-Click's own modules sit on its 9-channel UNet)."""
    options = model.model_options.get("transformer_options", {})
    if MOTION_MODEL_KEY in options:
        raise Pix2GifInputError(
            f"this MODEL already carries motion model '{options[MOTION_MODEL_KEY].name}'; apply one motion model "
            "per MODEL (connect the checkpoint's MODEL output instead)")
    channels = model.model.model_config.unet_config.get("in_channels", 4)
    if channels != unet_in_channels:
        raise Pix2GifInputError(
            f"this MODEL's UNet takes {channels} input channels (e.g. Pix2Gif's 12-channel UNet from 'Load Pix2Gif "
            "Model', or an inpainting model); AnimateDiff motion modules go on a 4-channel SD1.5 text-to-image "
            "MODEL: connect a plain SD1.5 checkpoint's MODEL")
    modules = motion.modules_in(compute_dtype(model))
    context = FrameContext()
    kernel = host_attention(attention_precision(model))
    placement = MotionPlacement(
        motion.name, modules.config.version, modules.config.pe_length,
        {name: InjectedMotionModule(name, module, context, key_scale=key_scale, kernel=kernel)
         for name, module in modules.named_motion_modules()}, context)

    def build(lookup: Lookup):
        return _placed_layers(lookup, placement, modules, motion.name, cross_frame_groupnorm)

    layers = build(lambda path: _original(model, path))  # checks the MODEL now, not at load time
    patched = model.clone()
    if hosts_injections(model):
        patched.set_injections(MOTION_MODELS_KEY, [_injection(build)])
        patched.set_additional_models(MOTION_MODELS_KEY, [managed_model(modules, model.load_device,
                                                                       model.offload_device)])
    else:
        for path, layer in layers.items():
            patched.add_object_patch(path, layer)
        patched.size = model.model_size() + comfy.model_management.module_size(modules)
    if beta_schedule is not None:
        patched.add_object_patch("model_sampling", schedule_patch(model, beta_schedule))
    patched.set_model_unet_function_wrapper(_frame_wrapper(context, placement.pe_length,
                                                           model.model_options.get("model_function_wrapper")))
    patched.model_options.setdefault("transformer_options", {})[MOTION_MODEL_KEY] = placement
    return patched


def motion_placement(model) -> MotionPlacement:
    """The motion model a MODEL carries; clear error if it carries none."""
    placement = model.model_options.get("transformer_options", {}).get(MOTION_MODEL_KEY)
    if placement is None:
        raise Pix2GifInputError("the MODEL has no motion model: connect it through 'Apply Motion Model' first")
    return placement


def injected_motion_modules(model) -> dict[str, InjectedMotionModule]:
    """The motion modules a motion-patched MODEL runs, by name (``down_blocks.0.motion_modules.0`` …)."""
    return motion_placement(model).modules


def _motion_patched_clone(model):
    motion_placement(model)
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


def set_temporal_key_scales(model, key_scales):
    """A clone of a motion-patched ``model`` whose temporal attentions scale their keys per position by
    ``key_scales(latent_hw)`` (a :class:`~..pix2gif_core.animatediff.injection.KeyScales`) in every UNet call."""
    patched, transformer_options = _motion_patched_clone(model)
    transformer_options[TEMPORAL_KEY_SCALES_KEY] = key_scales
    return patched
