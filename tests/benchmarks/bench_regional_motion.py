"""Regional Motion's overhead per UNet step against plain AnimateDiff, as paired ratios measured in the same run.

A ComfyUI host booted in-process; the test pack's tiny SD1.5-topology UNet (model_channels 32) with the tiny v3
motion model; 2 videos (CFG: cond + uncond) × 16 frames × ``--latent``² latents (64 = 512² images); euler,
``--steps`` steps through ComfyUI's own ``comfy.sample.sample``. A = the motion-patched MODEL (Apply Motion Model),
B = the same MODEL through Regional Motion with a mask over the middle third of the image:

- hard: the UNet wrapper (frame 0 outside the region on the UNet's input and output), the post-CFG hook and the
  outer-sample shared-noise wrapper – elementwise work on the 2×16×4×64×64 latents per step;
- soft (motion scale), background 0.2: the per-position key scales of every temporal attention (one multiply of
  the keys per attention; the scale tables are built once per size, dtype and device).

``--unet no-spatial-attention`` (the default) is that UNet without its spatial transformers at the four resolution
levels (the 8×8 middle one kept): its step at 64×64 latents fits a CPU run (the spatial self-attention over 4096
tokens per frame is what makes the full tiny UNet take minutes per call there), and, being cheaper than any real
step while the patches' work is unchanged, it bounds the ratio from above; ``--unet tiny`` is the full tiny UNet
(use ``--latent 16`` or ``32`` on a CPU). The tiny UNet's step is about a hundredth of SD1.5's, while the hard
patch's work does not grow with the UNet's width and the soft patch's grows as the attention's own keys: the
ratios here bound those of a full-size SD1.5 step from above.

Time per UNet step = the sampling call's time / steps (set-up included in both). Interleaved A/B after one
warm-up pair, order alternating; median times, median and p10–p90 of the per-pair ratios B/A.

Run: ``OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_regional_motion.py [--host 0.33.0]
[--pairs N] [--steps N] [--latent N] [--unet no-spatial-attention|tiny]``.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))
from bench_warp import paired  # noqa: E402  (also puts the repository root on sys.path)

VIDEOS, FRAMES = 2, 16
NO_SPATIAL_ATTENTION = "no-spatial-attention"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.33.0")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--latent", type=int, default=64, help="latent height = width (64 = 512² images)")
    parser.add_argument("--unet", default=NO_SPATIAL_ATTENTION, choices=(NO_SPATIAL_ATTENTION, "tiny"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-regional-"))
    import comfy_host

    comfy_host.start(args.host, folder, (REPO / "tests" / "harness" / "custom_nodes",))
    sys.path.append(str(REPO))
    import comfy.sample
    import folder_paths
    import nodes
    import workflow

    workflow.use_tiny_models({}, folder / "animatediff_models")  # writes the tiny v3 motion model there
    folder_paths.add_model_folder_path("animatediff_models", str(folder / "animatediff_models"))
    classes = nodes.NODE_CLASS_MAPPINGS
    side = args.latent * 8
    mask = torch.zeros(1, side, side)
    mask[:, side // 3:2 * side // 3, side // 3:2 * side // 3] = 1
    test_models = sys.modules[classes["Pix2GifTest_TinyCheckpoint"].__module__]

    class WithoutSpatialAttention(test_models.TinySD15):
        unet_config = dict(test_models.TinySD15.unet_config, transformer_depth=[0] * 8,
                           transformer_depth_output=[0] * 12)

    test_models.TOPOLOGIES[NO_SPATIAL_ATTENTION] = WithoutSpatialAttention
    with torch.inference_mode():  # as the executor runs nodes
        model, clip, _ = classes["Pix2GifTest_TinyCheckpoint"]().load(0, "sd15" if args.unet == "tiny" else args.unet)
        positive = classes["CLIPTextEncode"]().encode(clip, "a dog wags its tail")[0]
        negative = classes["CLIPTextEncode"]().encode(clip, "")[0]
        motion = classes["Pix2Gif_LoadMotionModel"]().load(workflow.TINY_MOTION_FILE, "auto")[0]
        plain = classes["Pix2Gif_ApplyMotionModel"]().apply(model, motion, 1.0, "sqrt_linear (AnimateDiff)",
                                                            "per-frame")[0]
        regional = classes["Pix2Gif_RegionalMotion"]()
        hard = regional.patch(plain, mask, "hard", 1.0)["result"][0]
        soft = regional.patch(plain, mask, "soft (motion scale)", 1.0, background_motion=0.2)["result"][0]
    latent = torch.zeros(FRAMES, 4, args.latent, args.latent)
    noise = comfy.sample.prepare_noise(latent, 0)

    def step_of(patched):
        def sample() -> None:
            with torch.inference_mode():
                comfy.sample.sample(patched, noise, args.steps, 7.0, "euler", "normal", positive, negative, latent,
                                    denoise=1.0, disable_pbar=True, seed=0)
        return sample

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
          f", host {args.host}, {args.pairs} pairs, {args.steps} steps per sampling call; times are per call")
    print(f"| B vs A (CPU, {args.unet} UNet, {VIDEOS}×{FRAMES}×{args.latent}×{args.latent} latents) | A ms | B ms | "
          "B/A median [p10–p90] |\n|---|---|---|---|")
    paired("Regional Motion hard vs plain AnimateDiff", step_of(plain), step_of(hard), args.pairs)
    paired("Regional Motion soft (motion scale, background 0.2) vs plain AnimateDiff", step_of(plain),
           step_of(soft), args.pairs)


if __name__ == "__main__":
    main()
