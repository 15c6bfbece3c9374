"""One Motion-Inversion training step (issue 4) on the tiny model, as paired ratios against same-run baselines.

The tiny SD1.5-topology checkpoint of the test pack with the tiny v3 motion model, in a ComfyUI host booted
in-process; a 16-frame 64×64 reference clip (latent 8×8); embeddings of the default layers. Everything runs
inside one sampling session of the training node's own machinery (``run_in_sampling``, ``frozen``,
``EmbeddingOptimiser``), so A and B are exactly the calls the node makes:

1. Time: one training step (draw σ and ε, forward with saved-tensor copies, loss, backward, AdamW) vs one plain
   forward of the same patched model (no autograd) on the same noisy latent. Interleaved A/B after one warm-up;
   median times, median and p10–p90 of the per-pair ratios B/A.
2. Copy cost: the training step as the node runs it vs the same step without :class:`SavedCopies` (possible on
   hosts whose UNet does no in-place update on saved activations, e.g. 0.3.75; the 2024-03 host needs the copies).
   In-step monitor cost: the step with the node's :class:`StepMonitor` (Cancel checks after every motion module
   and at every activation the backward pass reads, progress ticks) vs the same step with a monitor doing nothing.
3. Peak memory: the peak of the bytes allocated during one forward and during one training step and still live
   (torch.profiler CPU memory timeline; deterministic, one run each; the process's resident set cannot show it,
   since the allocator reuses memory mapped in the warm-up); plus the one-time copy of the frozen weights that
   ``frozen`` makes (ComfyUI loads them as inference tensors).

Run: ``OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_motion_inversion_training.py
[--host 0.3.75]`` (≈2 min).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))
from bench_warp import paired  # noqa: E402  (also puts the repository root on sys.path)

FRAMES, SIZE = 16, 64


def peak_allocated_mib(fn, folder: Path) -> float:
    """Peak of the bytes allocated by ``fn()`` and still live, from torch.profiler's CPU memory timeline (allocator
    events; tensors that existed before the call are not counted), in MiB."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True,
                                record_shapes=True, with_stack=True) as profile:
        fn()
    timeline = folder / "memory_timeline.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of a CUDA-only API
        profile.export_memory_timeline(str(timeline), device="cpu")
    _, sizes = json.loads(timeline.read_text())
    return max(sum(by_category) for by_category in sizes) / 2**20


def reference_clip() -> torch.Tensor:
    """IMAGE (16, 64, 64, 3): a bright square sliding right."""
    clip = torch.full((FRAMES, SIZE, SIZE, 3), 0.2)
    for frame in range(FRAMES):
        clip[frame, 20:36, 2 * frame:2 * frame + 16] = 0.9
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.3.75")
    host = parser.parse_args().host
    folder = Path(tempfile.mkdtemp(prefix="bench-mi-"))
    import comfy_host

    comfy_host.start(host, folder, (REPO / "tests" / "harness" / "custom_nodes",))
    sys.path.append(str(REPO))
    import comfy.utils
    import folder_paths
    import nodes
    import workflow

    workflow.use_tiny_models({}, folder / "animatediff_models")  # writes the tiny v3 motion model there
    folder_paths.add_model_folder_path("animatediff_models", str(folder / "animatediff_models"))
    classes = nodes.NODE_CLASS_MAPPINGS
    training = sys.modules[classes["Pix2Gif_TrainMotionEmbeddings"].__module__]
    embedding_nodes = sys.modules[classes["Pix2Gif_ApplyMotionEmbeddings"].__module__]
    core = sys.modules[training.__name__.rsplit(".nodes.", 1)[0] + ".pix2gif_core.motion_inversion.embeddings"]
    step_monitor = sys.modules[training.__name__.rsplit(".", 1)[0] + ".step_monitor"]

    with torch.inference_mode():  # as the executor runs nodes
        model, clip, vae = classes["Pix2GifTest_TinyCheckpoint"]().load(0)
        positive = classes["CLIPTextEncode"]().encode(clip, "a square sliding right")[0]
        motion = classes["Pix2Gif_LoadMotionModel"]().load(workflow.TINY_MOTION_FILE, "auto")[0]
        patched = classes["Pix2Gif_ApplyMotionModel"]().apply(model, motion, 1.0, "sqrt_linear (AnimateDiff)",
                                                              "per-frame")[0]
        latent = vae.encode(reference_clip())
        modules = embedding_nodes.motion_modules(patched)
        channels = {name: module.channels for name, module in modules.items()}
        specs = core.sd15_layer_specs(channels, tuple(latent.shape[-2:]), training.layer_selection(core.DEFAULT_LAYER_PRESET,
                                                                                              channels))
        sampling = embedding_nodes.loaded_noise_schedule(patched)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, host {host}, {FRAMES} frames "
          f"{SIZE}×{SIZE} (latent {tuple(latent.shape[-2:])}), {len(specs)} embedding layers")

    def measure(denoise, x0: torch.Tensor) -> None:
        optimiser = training.EmbeddingOptimiser(embeddings, sampling.sigmas, 0.02, training.LOSSES["plain"], 0,
                                                x0.device, False)
        noisy, sigma = x0 + 3.0 * torch.randn_like(x0), torch.full((FRAMES,), 3.0)

        def forward() -> None:
            with torch.no_grad():
                denoise(noisy, sigma)

        class Unmonitored:
            def forward_done(self) -> None: ...

            def unpacked(self, done: int, saved: int) -> None: ...

        monitor = step_monitor.StepMonitor(10**6, modules.values(), comfy.utils.ProgressBar(10**7), lambda line: None,
                                           x0.device)

        def step() -> None:
            with monitor.watching():
                monitor.step_started()
                optimiser.step(denoise, x0, monitor)
                monitor.step_done()

        def unmonitored_step() -> None:
            optimiser.step(denoise, x0, Unmonitored())

        def step_without_copies() -> None:
            hooks = training.SavedCopies.hooks
            training.SavedCopies.hooks = lambda self: contextlib.nullcontext()
            try:
                step()
            finally:
                training.SavedCopies.hooks = hooks

        unet = trainable.model.diffusion_model
        copied = sum(t.numel() * t.element_size() for t in (*unet.parameters(), *unet.buffers()) if t.is_inference())
        with training.frozen(unet):
            print("| B vs A (CPU, tiny model, 16×64×64) | A ms | B ms | B/A median [p10–p90] |\n|---|---|---|---|")
            paired("one training step vs one plain forward of the same patched model", forward, step)
            forward_mib, step_mib = peak_allocated_mib(forward, folder), peak_allocated_mib(step, folder)
            try:
                paired("training step (saved-tensor copies) vs the same step without copies", step_without_copies,
                       step)
                without_copies = f"{peak_allocated_mib(step_without_copies, folder):.1f} MiB"
            except RuntimeError as err:  # this host updates saved activations in place: the copies are needed
                print(f"| training step without saved-tensor copies | – | – | fails: {str(err)[:60]}… |")
                without_copies = "fails"
            paired("training step with the in-step monitor vs with a monitor doing nothing", unmonitored_step, step)
        print(f"\npeak memory allocated during the call: forward {forward_mib:.1f} MiB, training step "
              f"{step_mib:.1f} MiB ({step_mib / forward_mib:.2f}×; without saved-tensor copies {without_copies}); "
              "frozen-weight copies "
              f"{copied / 2**20:.1f} MiB once per training run; embeddings "
              f"{sum(t.numel() * t.element_size() for t in embeddings.parameters()) / 2**20:.2f} MiB (+2× AdamW "
              "state, +1× gradients)")

    with torch.inference_mode(False), torch.enable_grad():
        embeddings = core.MotionEmbeddings.zeros(specs, FRAMES, (SIZE, SIZE), "v3")
        trainable = embedding_nodes.add_temporal_variant_provider(
            patched, core.MotionEmbeddingPatch(embeddings, modules).variants)
        schedule = sampling.sigmas.flip(0)
        embedding_nodes.run_in_sampling(trainable, positive, latent, torch.cat([schedule, schedule.new_zeros(1)]),
                                        measure)


if __name__ == "__main__":
    main()
