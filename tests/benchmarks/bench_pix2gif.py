"""Pix2Gif costs on CPU as paired ratios against same-run baselines (interleaved A/B after one warm-up; median
times, median and p10–p90 of the per-pair ratios B/A), plus exact FLOP counts.

1. Motion preview end to end, what ``workflows/motion_preview.json`` does: the bundled 512² PNG → zoom 32 px over
   16 frames (reflect edges) → GIF file by the pack's writer (one palette for the clip, ordered dither, 12 fps).
   Baseline A: Pillow's default GIF save (``save_all``) of the same 16 already-warped frames – the bare cost of
   writing that clip as a GIF with no motion work and no palette choice of ours.
2. FlowNet + motion-guided warp of one frame's CFG batch (3 rows: text, image only, unconditional) vs one UNet
   call on the same 3 rows of the tiny Pix2Gif model (tests/harness test pack, ComfyUI host booted in-process).
   The sampler computes the FlowNet once per sampling run, not per step.
3. FLOPs (torch.utils.flop_counter; UNet on the meta device): the same FlowNet + warp vs one 3-row call of the
   full-size Pix2Gif UNet (SD1.5 with 12 input channels) at 32×32 – the real-scale overhead.

Run: ``OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_pix2gif.py [--host 0.3.75]`` (≈2 min).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))
from bench_warp import PAIRS, paired  # noqa: E402  (also puts the repository root on sys.path)

from pix2gif_core.video.animation_writer import AnimationOptions, write_animation  # noqa: E402
from pix2gif_core.warps.motion_field import motion_field, warp_frames  # noqa: E402
from pix2gif_core.pix2gif.flownet import FlowNet, motion_guided_concat  # noqa: E402

SAMPLE = REPO / "workflows" / "assets" / "sample_landscape.png"
FRAMES, ZOOM_PX, FPS = 16, 32.0, 12.0
ROWS = 3  # one frame's CFG batch


def preview_benchmark(folder: Path) -> None:
    def preview_to_gif() -> None:
        rgb = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float32) / 255.0
        image = torch.from_numpy(rgb).movedim(-1, 0)[None]
        field = motion_field("zoom", ZOOM_PX, FRAMES, *image.shape[-2:])
        frames = warp_frames(image, field, "reflect").clamp(0.0, 1.0).movedim(1, -1)
        write_animation(frames, folder / "preview.gif", AnimationOptions(fps=FPS, gif_dither="ordered"))

    with torch.no_grad():
        image = torch.from_numpy(np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float32) / 255.0)
        warped = warp_frames(image.movedim(-1, 0)[None], motion_field("zoom", ZOOM_PX, FRAMES, *image.shape[:2]))
    pictures = [Image.fromarray(frame) for frame in
                (warped.clamp(0, 1).movedim(1, -1) * 255).round().to(torch.uint8).numpy()]

    def pillow_default_gif() -> None:
        pictures[0].save(folder / "pillow.gif", save_all=True, append_images=pictures[1:],
                         duration=round(1000 / FPS), loop=0)

    print(f"| B vs A (CPU, {FRAMES} frames 512²) | A ms | B ms | B/A median [p10–p90] |\n|---|---|---|---|")
    paired("preview PNG → zoom → GIF (ours) vs Pillow default GIF save of the same frames", pillow_default_gif,
           preview_to_gif)


def flownet_benchmark(host: str, folder: Path) -> None:
    import comfy_host

    comfy_host.start(host, folder, (REPO / "tests" / "harness" / "custom_nodes",))
    sys.path.append(str(REPO))
    import comfy.model_management
    import cost_model
    import nodes
    import workflow

    checkpoint = workflow.write_tiny_pix2gif(folder / "checkpoints" / "tiny_pix2gif.ckpt")
    torch.set_grad_enabled(False)
    model, _, _, motion = _load(nodes, checkpoint)
    comfy.model_management.load_models_gpu([model])
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(ROWS, 4, 32, 32, generator=generator)
    source[-1] = 0.0
    context = torch.randn(ROWS, 77, 768, generator=generator)
    x = torch.randn(ROWS, 4, 32, 32, generator=generator)
    sigma = torch.full((ROWS,), 5.0)
    concat = motion_guided_concat(motion.flownet, source, context)

    print(f"\n| B vs A (CPU, {ROWS} rows, 32×32 latent) | A ms | B ms | B/A median [p10–p90] |\n|---|---|---|---|")
    paired("FlowNet + warp vs one UNet call of the tiny Pix2Gif model",
           lambda: model.model.apply_model(x, sigma, c_concat=concat, c_crossattn=context),
           lambda: motion_guided_concat(motion.flownet, source, context))

    added = cost_model.count(lambda: motion_guided_concat(FlowNet().eval(), source, context)).flops
    unet = _full_size_pix2gif_unet()
    meta = {"device": "meta", "dtype": torch.float16}
    full = cost_model.count(lambda: unet(torch.empty(ROWS, 12, 32, 32, **meta), timesteps=torch.empty(ROWS, **meta),
                                         context=torch.empty(ROWS, 77, 768, **meta))).flops
    print(f"\nFLOPs per {ROWS}-row call: FlowNet + warp {added / 1e9:.3f} GFLOP; full-size Pix2Gif UNet "
          f"{full / 1e9:.1f} GFLOP; ratio {added / full:.5f} (per step of a 100-step run: {added / full / 100:.7f})")


def _load(nodes, checkpoint: Path):
    import folder_paths

    folder_paths.add_model_folder_path("checkpoints", str(checkpoint.parent))
    return nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadPix2GifModel"]().load(checkpoint.name, True)


def _full_size_pix2gif_unet():
    import comfy.model_base
    import comfy.supported_models
    import cost_model

    config = comfy.supported_models.SD15(dict(cost_model.SD15_UNET, in_channels=12))
    config.set_inference_dtype(torch.float16, None)
    return comfy.model_base.BaseModel(config, device=torch.device("meta")).diffusion_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.3.75")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
          f", {PAIRS} pairs")
    folder = Path(tempfile.mkdtemp(prefix="pix2gif-bench-"))
    preview_benchmark(folder)
    flownet_benchmark(args.host, folder)


if __name__ == "__main__":
    main()
