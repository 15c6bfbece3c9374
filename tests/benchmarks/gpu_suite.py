"""GPU benchmark suite: seconds per sampling step, peak memory and share of the device's peak FLOP/s for the plain
SD1.5 UNet, AnimateDiff, AnimateZero and Motion Inversion, plus the AnimateZero window layer vs global attention.

Random-weight models in the official layouts: the host's own SD1.5 UNet (ComfyUI's classes, SD1.5 config) and an
AnimateDiff v2 motion module written as an official-key ``.safetensors`` file and read by the pack's loader;
everything sampled through ComfyUI's own sampler (``comfy.sample.sample``, euler, CFG 7, cond and uncond in one
batch) from the pack's nodes, as a user's graph runs it. Steps are timed between sampler callbacks with the device
synchronised, after a whole warm-up run; peak memory is ``torch.cuda.max_memory_allocated`` over the timed run
(weights included; reset before it). FLOPs per step come from the meta-device counter (tests/harness/cost_model),
the device's peak from its datasheet (where known) and from a bf16 matmul measured in the same run.

    .comfy-ci/venv/bin/python tests/benchmarks/gpu_suite.py                      # CUDA, bf16, 16×512², ≈ 3 min
    .comfy-ci/venv/bin/python tests/benchmarks/gpu_suite.py --device cpu --tiny  # CPU smoke run, seconds

Results are appended to tests/benchmarks/RESULTS.md (``--results`` elsewhere, ``--no-record`` not at all).
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR / "harness"))
sys.path.insert(0, str(TESTS_DIR / "fixtures"))
import comfy_host  # noqa: E402

#: dense bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s (first matching name wins)
DATASHEET_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L40S", 362.1))
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Sizes:
    """What one run samples: ``frames`` × ``pixels``² with ``steps`` sampler steps (the first ``warm_steps``
    of each timed run are not counted), the UNet config and motion-module channels."""

    frames: int
    pixels: int
    steps: int
    warm_steps: int
    unet_config: dict
    motion_layout: dict
    window_sequences: int  # sequences (batch × positions) of the window-vs-global layer comparison


def sizes(tiny: bool) -> Sizes:
    import cost_model

    if not tiny:
        return Sizes(16, 512, 8, 2, cost_model.SD15_UNET, cost_model.SD15_V2_LAYOUT, window_sequences=2 * 64 * 64)
    channels = (32, 64, 128, 128)
    layout = dict(cost_model.SD15_V2_LAYOUT, down_channels=channels, up_channels=channels[::-1],
                  mid_channels=channels[-1])
    return Sizes(4, 64, 3, 1, dict(cost_model.SD15_UNET, model_channels=channels[0]), layout, window_sequences=2 * 8 * 8)


@dataclass(frozen=True)
class Measured:
    seconds_per_step: float
    peak_bytes: int | None


class Device:
    """Timing and memory on one torch device: synchronised clocks, peak-memory reset and read (CUDA only)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.is_cuda = self.device.type == "cuda"

    def name(self) -> str:
        if self.is_cuda:
            return self.torch.cuda.get_device_name(self.device)
        import platform

        return f"CPU {platform.processor() or platform.machine()}, {self.torch.get_num_threads()} thread(s)"

    def now(self) -> float:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return self.torch.cuda.max_memory_allocated(self.device) if self.is_cuda else None

    def timed(self, call: Callable[[], object], repeats: int, warm_ups: int = 2) -> Measured:
        """Median seconds of ``call()`` over ``repeats`` after ``warm_ups`` calls; peak memory of the timed calls."""
        for _ in range(warm_ups):
            call()
        self.reset_peak()
        times = []
        for _ in range(repeats):
            start = self.now()
            call()
            times.append(self.now() - start)
        return Measured(statistics.median(times), self.peak())

    def matmul_peak_flops(self, dtype) -> float:
        """FLOP/s of a large square matmul in ``dtype`` (the reachable tensor-core peak), measured now."""
        side = 8192 if self.is_cuda else 512
        a, b = (self.torch.randn(side, side, device=self.device, dtype=dtype) for _ in range(2))
        seconds = self.timed(lambda: a @ b, repeats=10 if self.is_cuda else 3).seconds_per_step
        return 2 * side**3 / seconds


def pack_module(name: str):
    """A module of the pack as the host imported it (its top-level name differs between hosts)."""
    import importlib

    import nodes

    top = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_ApplyMotionModel"].__module__.rsplit(".nodes", 1)[0]
    return importlib.import_module(f"{top}.{name}")


def node(class_type: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[class_type]()


def random_unet_patcher(config: dict, device, dtype):
    """The host's SD1.5 UNet with random weights (linear/conv N(0, 1/fan_in), norms 1/0) as a ModelPatcher."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    sd15 = comfy.supported_models.SD15(dict(config))
    sd15.set_inference_dtype(dtype, None)
    base = comfy.model_base.BaseModel(sd15, device=device)
    with torch.no_grad():
        for layer in base.diffusion_model.modules():
            if isinstance(layer, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and layer.weight is not None:
                layer.weight.fill_(1.0)
                layer.bias.zero_()
            elif isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)):
                layer.weight.normal_(0.0, layer.weight[0].numel() ** -0.5)
                if getattr(layer, "bias", None) is not None:
                    layer.bias.zero_()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=torch.device("cpu"))


def random_motion_model(layout: dict, folder: Path, dtype):
    """An AnimateDiff v2 motion module with random weights in the official key layout, written to ``folder``
    as ``.safetensors`` and read by the pack's loader (Load Motion Model's code path)."""
    import motion_checkpoints

    state = motion_checkpoints.make_motion_state_dict("v2", tuple(layout["down_channels"]), seed=1)
    path = folder / "random_v2.safetensors"
    motion_checkpoints.write_safetensors(path, {key: tensor.to(dtype) for key, tensor in state.items()})
    modules = pack_module("pix2gif_core.animatediff.checkpoint").load_motion_module_set(str(path))
    return pack_module("nodes.animatediff_injection").LoadedMotionModel(path.name, modules)


def random_embeddings(motion_model, frames: int, pixels: int):
    """Random Motion-Inversion embeddings (query/key and value) on the default layers: the widest non-mid modules."""
    import torch

    embeddings = pack_module("pix2gif_core.motion_inversion.embeddings")
    channels = {name: module.channels for name, module in motion_model.modules.named_motion_modules()}
    widest = max(channels.values())
    specs = embeddings.sd15_layer_specs(channels, (pixels // 8, pixels // 8),
                                        lambda name, c: c == widest and not name.startswith("mid_block."))
    generator = torch.Generator().manual_seed(2)
    layers = {spec.name: embeddings.LayerEmbedding(
        torch.randn(1, frames, spec.channels, generator=generator) * 0.1,
        torch.randn(spec.token_hw[0] * spec.token_hw[1], frames, spec.channels, generator=generator) * 0.1,
        spec.token_hw) for spec in specs}
    return embeddings.MotionEmbeddings(layers, frames, (pixels, pixels), "v2")


def models(unet, motion_model, size: Sizes) -> dict:
    """The four MODELs, built by the pack's nodes: plain, + motion model, + AnimateZero, + motion embeddings."""
    (animatediff,) = node("Pix2Gif_ApplyMotionModel").apply(
        model=unet, motion_model=motion_model, motion_scale=1.0, beta_schedule="keep model's", groupnorm="per-frame")
    (animatezero,) = node("Pix2Gif_AnimateZero").patch(
        model=animatediff, pin_first_frame=False, kv_sharing="replace", kv_blocks="all", kv_start_percent=0.0,
        kv_end_percent=1.0, window_attention=True, window_length=0, window_blocks="down",
        kv_source="video pass")  # without a trajectory: frame 1 of the video pass
    (inversion,) = node("Pix2Gif_ApplyMotionEmbeddings").apply(
        model=animatediff, motion_embeddings=random_embeddings(motion_model, size.frames, size.pixels),
        mode="as_trained", strength=1.0, resolution="interpolate")
    return {"plain UNet": unet, "AnimateDiff": animatediff, "AnimateZero (K/V sharing + window attention)":
            animatezero, "Motion Inversion": inversion}


def seconds_per_step(device: Device, model, size: Sizes) -> Measured:
    """Median time between sampler callbacks of one timed ComfyUI sampling run (after a warm-up run)."""
    import comfy.sample
    import torch

    latent = torch.zeros(size.frames, 4, size.pixels // 8, size.pixels // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, size.unet_config["context_dim"], generator=torch.Generator().manual_seed(1))
    stamps: list[float] = []

    def run() -> None:
        stamps.clear()
        comfy.sample.sample(model, noise, size.steps, 7.0, "euler", "normal", [[context, {}]], [[context * 0, {}]],
                            latent, callback=lambda *_: stamps.append(device.now()), disable_pbar=True, seed=0)

    run()  # loads the models, picks kernels
    device.reset_peak()
    run()
    steps = [later - earlier for earlier, later in zip(stamps, stamps[1:])][size.warm_steps:]
    return Measured(statistics.median(steps), device.peak())


def window_vs_global(device: Device, size: Sizes, dtype) -> tuple[Measured, Measured]:
    """One temporal attention layer at the level-0 shape: global attention, then AnimateZero's window attention."""
    import torch

    motion = pack_module("pix2gif_core.animatediff.motion_module")
    window = pack_module("pix2gif_core.animatezero.window_attention").PositionCorrectedWindowAttention(None)
    channels = size.motion_layout["down_channels"][0]
    attention = motion.TemporalSelfAttention(channels, size.motion_layout["pe_length"]).to(device.device, dtype)
    hidden = torch.randn(size.window_sequences, size.frames, channels, device=device.device, dtype=dtype)
    repeats = 20 if device.is_cuda else 3
    with torch.no_grad():
        return (device.timed(lambda: attention(hidden), repeats),
                device.timed(lambda: attention(hidden, window), repeats))


def megabytes(measured: Measured) -> str:
    return "–" if measured.peak_bytes is None else f"{measured.peak_bytes / 2**20:,.0f}"


def report(args, device: Device, size: Sizes, steps: dict[str, Measured], window: tuple[Measured, Measured],
           flops: dict[str, int], peaks: dict[str, float]) -> str:
    plain = steps["plain UNet"].seconds_per_step
    animatediff = steps["AnimateDiff"].seconds_per_step
    lines = [f"## gpu_suite.py: {device.name()}, {args.dtype}, {size.frames}×{size.pixels}² CFG"
             + (" (tiny models)" if args.tiny else ""),
             "",
             f"Date {datetime.date.today()}; torch {device.torch.__version__}; host ComfyUI {args.host}; "
             f"{size.steps} euler steps, the first {size.warm_steps} of the timed run not counted, after a warm-up "
             f"run. Command: `{' '.join(['tests/benchmarks/gpu_suite.py', *sys.argv[1:]])}`. Peak FLOP/s: "
             + ", ".join(f"{name} {value / 1e12:.3g} TFLOP/s" for name, value in peaks.items()) + ".",
             "",
             "| MODEL | s/step | × plain | × AnimateDiff | peak MiB | TFLOP/step (meta) | "
             + " | ".join(f"% of {name}" for name in peaks) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(peaks)]
    for name, measured in steps.items():
        step_flops = flops["plain UNet"] if name == "plain UNet" else flops["AnimateDiff"]
        achieved = step_flops / measured.seconds_per_step
        shares = " | ".join(f"{100 * achieved / peak:.1f}" for peak in peaks.values())
        lines.append(f"| {name} | {measured.seconds_per_step:.4f} | {measured.seconds_per_step / plain:.3f} | "
                     f"{measured.seconds_per_step / animatediff:.3f} | {megabytes(measured)} | "
                     f"{step_flops / 1e12:.4f} | {shares} |")
    glob, win = window
    lines += ["",
              f"Temporal attention layer at level 0 ({size.window_sequences} sequences × {size.frames} frames × "
              f"{size.motion_layout['down_channels'][0]} channels): global {glob.seconds_per_step * 1e3:.3f} ms, "
              f"window {win.seconds_per_step * 1e3:.3f} ms (× {win.seconds_per_step / glob.seconds_per_step:.2f}); "
              f"peak MiB {megabytes(glob)} vs {megabytes(win)}.",
              "FLOPs: AnimateZero and Motion Inversion are counted as AnimateDiff (their extra work is small); "
              "targets (issue 13): AnimateDiff ≤ 1.45× plain, AnimateZero ≤ 1.10× and Motion Inversion ≤ 1.02× "
              "AnimateDiff, ≥ 50 % of the bf16 peak for the UNet step.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny models, 4×64², 3 steps (CPU smoke run)")
    parser.add_argument("--host", default="0.33.0")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="print only, append nothing")
    args = parser.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    workdir = Path(tempfile.mkdtemp(prefix="pix2gif-gpu-suite-"))
    comfy_host.start(args.host, workdir, cpu=not args.device.startswith("cuda"))
    import cost_model
    import torch

    device, dtype, size = Device(args.device), getattr(torch, DTYPES[args.dtype]), sizes(args.tiny)
    if device.is_cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --tiny")
    plain_cost, motion_cost = cost_model.sd15_call_costs(2, size.frames, size.pixels // 8, size.unet_config,
                                                         size.motion_layout)
    flops = {"plain UNet": plain_cost.flops, "AnimateDiff": motion_cost.flops}
    peaks = {f"measured {args.dtype} matmul": device.matmul_peak_flops(dtype)}
    datasheet = next((tflops for name, tflops in DATASHEET_BF16_TFLOPS if name in device.name()), None)
    if datasheet is not None:
        peaks["datasheet bf16"] = datasheet * 1e12
    unet = random_unet_patcher(size.unet_config, device.device, dtype)
    built = models(unet, random_motion_model(size.motion_layout, workdir, dtype), size)
    steps = {name: seconds_per_step(device, model, size) for name, model in built.items()}
    text = report(args, device, size, steps, window_vs_global(device, size, dtype), flops, peaks)
    print(text)
    if not args.no_record:
        with args.results.open("a", encoding="utf-8") as results:
            results.write("\n" + text)


if __name__ == "__main__":
    main()
