"""Exact, machine-independent cost counters of one UNet call at SD1.5 shapes: FLOPs and aten-op count.

Built on PyTorch's ``meta`` device (no weights, no compute), from the booted host's own SD1.5 UNet classes and
our real injection code, so the counts describe what ComfyUI runs. Used by tests/host/test_cost_model.py and
tests/benchmarks/bench_cost_model.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

SD15_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1, context_dim=768,
    num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, adm_in_channels=None,
    use_spatial_transformer=True, legacy=False, use_checkpoint=False, use_temporal_resblock=False,
    use_temporal_attention=False)
SD15_V2_LAYOUT = dict(version="v2", down_channels=(320, 640, 1280, 1280), modules_per_down_block=2,
                      up_channels=(1280, 1280, 640, 320), modules_per_up_block=3, mid_channels=1280, pe_length=32)
#: (channels, latent side at 512², modules) of AnimateDiff v2's 21 motion modules in SD1.5 (methods.md §1.3)
SD15_V2_MODULES = ((320, 64, 5), (640, 32, 5), (1280, 16, 5), (1280, 8, 6))


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _plenty_of_memory(dev=None, torch_free_too=False):
    return (1 << 50, 1 << 50) if torch_free_too else 1 << 50


@dataclass(frozen=True)
class Cost:
    flops: int
    aten_ops: int


def count(call) -> Cost:
    """FLOPs (matmul/conv/attention, as torch.utils.flop_counter counts them) and aten ops of ``call()``.

    ComfyUI's CPU attention asks for the device's free memory to pick a chunk size; a meta device has none to
    report, so it is told "plenty" (one chunk) while counting.
    """
    import comfy.model_management

    ops = _OpCounter()
    free_memory = comfy.model_management.get_free_memory
    comfy.model_management.get_free_memory = _plenty_of_memory
    try:
        with FlopCounterMode(display=False) as flops, ops, torch.no_grad():
            call()
    finally:
        comfy.model_management.get_free_memory = free_memory
    return Cost(flops.get_total_flops(), ops.count)


def animatediff_added_flops(videos: int, frames: int, modules=SD15_V2_MODULES, heads: int = 8) -> int:
    """Independent reference: FLOPs AnimateDiff's motion modules add to one UNet call.

    Per module and token: proj_in, 2 × (q, k, v, out), GEGLU (C→8C, 4C→C) and proj_out = 22·C² MACs; per
    attention the score and value products cost 2 · 2·N·F²·C FLOPs over N = videos·H·W sequences.
    """
    total = 0
    for channels, side, count_ in modules:
        tokens = videos * frames * side * side
        sequences = videos * side * side
        linear = 2 * 22 * channels * channels * tokens
        attention = 2 * (2 * 2 * sequences * frames * frames * channels)
        total += count_ * (linear + attention)
    return total


def sd15_call_costs(videos: int = 2, frames: int = 16, side: int = 64, unet_config: dict = SD15_UNET,
                    motion_layout: dict = SD15_V2_LAYOUT) -> tuple[Cost, Cost]:
    """(plain UNet, UNet with AnimateDiff v2 injected) costs of one CFG-batched call at SD1.5 shapes (or another
    SD1.5-topology ``unet_config`` with its ``motion_layout``); ``side`` is the latent side."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    import nodes

    pack = __import__(nodes.NODE_CLASS_MAPPINGS["Pix2Gif_ApplyMotionModel"].__module__, fromlist=["x"])
    core = __import__(pack.__name__.rsplit(".nodes", 1)[0] + ".pix2gif_core.animatediff.motion_module", fromlist=["x"])
    injection = __import__(pack.__name__.rsplit(".", 1)[0] + ".animatediff_injection", fromlist=["x"])

    config = comfy.supported_models.SD15(dict(unet_config))
    config.set_inference_dtype(torch.float16, None)
    base = comfy.model_base.BaseModel(config, device=torch.device("meta"))
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    with torch.device("meta"):
        modules = core.MotionModuleSet(core.MotionModuleConfig(**motion_layout))
    motion = injection.LoadedMotionModel("sd15_v2_on_meta", modules)
    patched = injection.inject(patcher, motion, key_scale=1.0, cross_frame_groupnorm=False, beta_schedule=None)

    batch = videos * frames
    x = torch.empty(batch, 4, side, side, device="meta", dtype=torch.float16)
    t = torch.empty(batch, device="meta", dtype=torch.float16)
    context = torch.empty(batch, 77, unet_config["context_dim"], device="meta", dtype=torch.float16)
    unet = base.diffusion_model
    cond_or_uncond = list(range(videos))

    def run_unet(x_, t_, c_crossattn, transformer_options):
        return unet(x_, timesteps=t_, context=c_crossattn, transformer_options=transformer_options)

    def patched_call():
        wrapper = patched.model_options["model_function_wrapper"]
        args = {"input": x, "timestep": t, "cond_or_uncond": cond_or_uncond,
                "c": {"c_crossattn": context, "transformer_options": {"cond_or_uncond": cond_or_uncond}}}
        return wrapper(run_unet, args)

    plain = count(lambda: run_unet(x, t, context, {}))
    backups = {}
    try:  # what loading the MODEL does: its object patches, then (ComfyUI ≥ 0.3) its injections
        for path, obj in patched.object_patches.items():
            backups[path] = _swap(base, path, obj)
        if hasattr(patched, "inject_model"):
            patched.inject_model()
        with_motion = count(patched_call)
    finally:
        if hasattr(patched, "eject_model"):
            patched.eject_model()
        for path, obj in reversed(list(backups.items())):
            _swap(base, path, obj)
    return plain, with_motion


def _swap(root, path: str, obj):
    *parents, last = path.split(".")
    for part in parents:
        root = getattr(root, part)
    previous = getattr(root, last)
    setattr(root, last, obj)
    return previous
