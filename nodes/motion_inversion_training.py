"""Node: learn Motion-Inversion embeddings from a reference clip through a motion-patched MODEL (methods.md §4.5).

Per step: a random noise level σ of the MODEL's schedule (uniform training timestep), fresh noise ε,
x = x0 + σ·ε, one call of the patched model exactly as a sampler makes it (ComfyUI's own sampling machinery,
cfg 1, see :func:`run_in_sampling`), ε̂ = (x − D)/σ from the denoised estimate D, plain or appearance-debiased
ε-MSE, one AdamW step on the embeddings alone. Every other weight is frozen and left bit-identical.

The timestep, the noise and the debiased loss's frame are drawn on the model's device from one generator seeded
there (reproducible per seed and device); the loss stays on the device and is read back every
:data:`LOG_EVERY` steps only, so a step never waits for the device. Cancel, progress and the time estimate
inside a step: :mod:`.step_monitor`.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import comfy.model_management
import comfy.utils
import torch
from torch import nn

from ..pix2gif_core.motion_inversion.embeddings import (DEFAULT_LAYER_PRESET, LAYER_PRESETS, LayerEmbedding,
                                                        LayerPredicate, MotionEmbeddingPatch, MotionEmbeddings,
                                                        save_motion_embeddings, sd15_layer_specs)
from ..pix2gif_core.motion_inversion.loss import debiased_loss, plain_loss
from .conventions import category, display_name, input_error, node_id, reported_as
from .motion_inversion import (LATENT_SCALE, MOTION_EMBEDDINGS_TYPE, embeddings_file, loaded_noise_schedule,
                                     motion_modules)
from .sampling_session import Denoiser, run_in_sampling
from .step_monitor import TICKS_PER_STEP, StepMonitor
from .animatediff_injection import add_temporal_variant_provider, motion_placement

LossFunction = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]
#: (ε̂, ε, frames per video, generator for the debiased loss's random frame) → scalar loss
LOSSES: dict[str, LossFunction] = {
    "plain": lambda eps_hat, eps, frames, generator: plain_loss(eps_hat, eps),
    "debiased": lambda eps_hat, eps, frames, generator: debiased_loss(eps_hat, eps, frames, generator=generator),
}
LOG_EVERY = 10
"""Steps between loss lines in the log (and the loss_log output), besides the first and the last step: the loss
is read back from the device only then."""
SD15_WIDEST = 1280


def layer_selection(preset: str, module_channels: Mapping[str, int]) -> LayerPredicate:
    """The :data:`LAYER_PRESETS` predicate ``preset``, whose names are SD1.5's widths (320/640/1280), read relative
    to this motion module's widest module, so narrower SD1.5-topology modules (e.g. the tiny test models) select
    the same UNet levels."""
    pick, widest = LAYER_PRESETS[preset], max(module_channels.values())
    return lambda name, channels: pick(name, channels * SD15_WIDEST // widest)


@contextmanager
def frozen(module: nn.Module):
    """Every weight and buffer of ``module`` frozen while something else trains through it; all restored on exit.

    ComfyUI loads models under ``torch.inference_mode``, and autograd cannot save such inference tensors for the
    backward pass: each one is replaced by a normal copy for the duration (one extra copy of those weights in
    memory). The originals are never written, so they are bit-identical afterwards.
    """
    replaced, thawed = [], []
    try:
        for owner in module.modules():
            for registry in (owner._parameters, owner._buffers):
                for name, tensor in list(registry.items()):
                    if tensor is None:
                        continue
                    if tensor.is_inference():
                        copy = tensor.detach().clone()
                        registry[name] = nn.Parameter(copy, requires_grad=False) if isinstance(tensor, nn.Parameter) \
                            else copy
                        replaced.append((registry, name, tensor))
                    elif tensor.requires_grad:
                        tensor.requires_grad_(False)
                        thawed.append(tensor)
        yield
    finally:
        for registry, name, original in replaced:
            registry[name] = original
        for tensor in thawed:
            tensor.requires_grad_(True)


class SavedCopies:
    """Autograd saved-tensor hooks that keep a copy of each saved activation, one per tensor version.

    ComfyUI's inference code updates activations in place (e.g. ``x += n`` after ``norm1(x)`` in the 2024-03
    ``BasicTransformerBlock``), which autograd refuses once the old value was saved for the backward pass. A copy
    keeps the value the backward pass needs. Tensors off the gradient's path (frozen weights, the conditioning)
    are saved as they are. ``on_unpack(read, saved)`` is called whenever the backward pass reads one back, with
    the counts so far. Use a fresh instance per forward pass.
    """

    def __init__(self, on_unpack: Callable[[int, int], None]) -> None:
        self._copies: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}
        self.on_unpack = on_unpack
        self.saved = 0
        self.read = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.saved += 1
        if not tensor.requires_grad:
            return tensor
        known = self._copies.get(id(tensor))
        if known is not None and known[0]() is tensor and known[1] == tensor._version:
            return known[2]
        copy = tensor.detach().clone()
        self._copies[id(tensor)] = (weakref.ref(tensor), tensor._version, copy)
        return copy

    def unpack(self, saved: torch.Tensor) -> torch.Tensor:
        self.read += 1
        self.on_unpack(self.read, self.saved)
        return saved

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def detached(embeddings: MotionEmbeddings, metadata: dict[str, str]) -> MotionEmbeddings:
    """A CPU snapshot of ``embeddings`` without autograd history, with ``metadata``."""
    layers = {name: LayerEmbedding(*(None if t is None else t.detach().cpu().clone() for t in (layer.qk, layer.v)),
                                   layer.token_hw)
              for name, layer in embeddings.layers.items()}
    return MotionEmbeddings(layers, embeddings.frames, embeddings.pixel_hw, embeddings.motion_module_version,
                            metadata)


class EmbeddingOptimiser:
    """Training steps on the embeddings: each draws a noise level σ of ``sigmas`` (one per training timestep,
    uniformly) and noise ε, runs the model once on x = x0 + σ·ε, and takes one AdamW step on the loss of
    ε̂ = (x − D)/σ against ε. Every draw comes from one generator seeded with ``seed`` on ``device`` (the
    model's). ``fp16``: the model computes in float16, whose gradients need loss scaling."""

    def __init__(self, embeddings: MotionEmbeddings, sigmas: torch.Tensor, learning_rate: float, loss: LossFunction,
                 seed: int, device: torch.device, fp16: bool):
        self.sigmas = sigmas.to(device)
        self.loss = loss
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.optimizer = torch.optim.AdamW(embeddings.parameters(), lr=learning_rate)
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def step(self, denoise: Denoiser, x0: torch.Tensor, monitor: StepMonitor) -> torch.Tensor:
        """One step on the clean latent ``x0`` (F, C, h, w) of one video (on the generator's device); returns the
        loss, a detached scalar tensor on that device."""
        frames = x0.shape[0]
        index = torch.randint(len(self.sigmas), (1,), generator=self.generator, device=self.sigmas.device)
        sigma = self.sigmas[index].to(x0.dtype)
        eps = torch.randn(x0.shape, generator=self.generator, device=x0.device, dtype=x0.dtype)
        x = x0 + sigma * eps
        with SavedCopies(monitor.unpacked).hooks():
            eps_hat = (x - denoise(x, sigma.expand(frames))) / sigma
            loss = self.loss(eps_hat, eps, frames, self.generator)
        monitor.forward_done()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def computes_in_fp16(model, device: torch.device) -> bool:
    """Whether the loaded MODEL's UNet runs in float16 on a CUDA device."""
    return device.type == "cuda" and (model.model.manual_cast_dtype or model.model.diffusion_model.dtype) == \
        torch.float16


@dataclass
class EmbeddingTraining:
    """One training run; called as the work of a sampling session (:func:`run_in_sampling`) with the sampler's
    ``denoise`` and the processed reference latent ``x0`` (F, C, h, w). Fills :attr:`losses` and :attr:`log`."""

    model: object  # the ModelPatcher being sampled (loaded while the run lasts)
    motion_modules: list[nn.Module]  # watched for progress and Cancel inside a step
    embeddings: MotionEmbeddings
    sigmas: torch.Tensor  # the schedule's noise levels, one per training timestep
    steps: int
    learning_rate: float
    loss: LossFunction
    seed: int
    save_every: int
    filename_prefix: str
    metadata: dict[str, str]
    losses: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    pending: list[torch.Tensor] = field(default_factory=list)  # losses of the steps since the last read-back

    def mean_recent_loss(self) -> float:
        recent = self.losses[-LOG_EVERY:]
        return sum(recent) / len(recent)

    def note(self, line: str) -> None:
        """A line for the log and the loss_log output."""
        self.log.append(line)
        logging.info("[%s] %s", TrainMotionEmbeddings.TITLE, line)

    def __call__(self, denoise: Denoiser, x0: torch.Tensor) -> None:
        optimiser = EmbeddingOptimiser(self.embeddings, self.sigmas, self.learning_rate, self.loss, self.seed,
                                       x0.device, computes_in_fp16(self.model, x0.device))
        monitor = StepMonitor(self.steps, self.motion_modules, comfy.utils.ProgressBar(self.steps * TICKS_PER_STEP),
                              self.note, x0.device)
        with frozen(self.model.model.diffusion_model), monitor.watching():
            for step in range(1, self.steps + 1):
                monitor.step_started()
                self.pending.append(optimiser.step(denoise, x0, monitor))
                monitor.step_done()
                self._report(step)

    def _report(self, step: int) -> None:
        if step in (1, self.steps) or step % LOG_EVERY == 0:
            self.losses += torch.stack(self.pending).tolist()
            self.pending.clear()
            self.note(f"step {step}/{self.steps}: loss {self.losses[-1]:.5f}, mean of the last "
                      f"{len(self.losses[-LOG_EVERY:])} {self.mean_recent_loss():.5f}")
        if self.save_every and step % self.save_every == 0:
            snapshot = detached(self.embeddings, {**self.metadata, "trained_steps": str(step)})
            save_motion_embeddings(snapshot, embeddings_file(self.filename_prefix, TrainMotionEmbeddings.TITLE,
                                                             f"step{step}"))


class TrainMotionEmbeddings:
    TITLE = "Train Motion Embeddings"
    DESCRIPTION = ("Learns the motion of a reference clip as motion embeddings (Motion Inversion) for a "
                   "motion-patched MODEL: AdamW on zero-initialised embeddings, everything else frozen. The "
                   "clip's size and frame count are the embeddings' training size. Minutes on a GPU; the log "
                   "estimates the time after the first forward pass, and Cancel stops inside a step.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A MODEL from Apply Motion Model"}),
            "positive": ("CONDITIONING", {"tooltip": "A prompt describing the reference clip"}),
            "vae": ("VAE",),
            "reference_frames": ("IMAGE", {"tooltip": "The reference clip, 2 frames or more (16 as AnimateDiff)"}),
            "steps": ("INT", {"default": 400, "min": 1, "max": 100000,
                              "tooltip": "Training steps (the paper: 400)"}),
            "learning_rate": ("FLOAT", {"default": 0.02, "min": 1e-6, "max": 10.0, "step": 0.001, "round": 1e-6,
                                        "tooltip": "AdamW learning rate (the paper: 0.02)"}),
            "loss": (list(LOSSES), {"default": "plain",
                                    "tooltip": "debiased: adds the frame-subtracted loss (α=√2, β=1) that favours "
                                               "motion over the clip's appearance (large deformations)"}),
            "layers": (list(LAYER_PRESETS), {"default": DEFAULT_LAYER_PRESET,
                                              "tooltip": "Motion modules that get embeddings. official: Motion "
                                                         "Inversion's, the 1280-channel modules at 1/32 of the "
                                                         "image (down_blocks.2, up_blocks.1); 1280: also those at "
                                                         "1/64 (the default before); 640+1280: also 1/16; all"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Seed of the training noise and timesteps"}),
            "save_every": ("INT", {"default": 0, "min": 0, "max": 100000,
                                   "tooltip": "Also save every N steps to models/motion_embeddings/"
                                              "<prefix>_step<N>.safetensors; 0 = off"}),
            "filename_prefix": ("STRING", {"default": "motion_inversion/motion",
                                           "tooltip": "For the intermediate saves"}),
        }}

    RETURN_TYPES = (MOTION_EMBEDDINGS_TYPE, "STRING")
    RETURN_NAMES = ("motion_embeddings", "loss_log")
    FUNCTION = "train"
    CATEGORY = category("Motion Inversion")

    def train(self, model, positive, vae, reference_frames, steps, learning_rate, loss, layers, seed, save_every,
              filename_prefix):
        frames = reference_frames.shape[0]
        if frames < 2:
            raise input_error(self.TITLE, f"reference_frames holds {frames} frame; a motion needs a clip of 2 "
                                          "frames or more (16 as AnimateDiff was trained)")
        if save_every:
            embeddings_file(filename_prefix, self.TITLE, "step0")  # refuse a bad prefix before training
        try:
            with reported_as(self.TITLE):
                return self._train(model, positive, vae, reference_frames, steps, learning_rate, loss, layers, seed,
                                   save_every, filename_prefix)
        finally:
            comfy.model_management.soft_empty_cache()

    def _train(self, model, positive, vae, reference_frames, steps, learning_rate, loss, layers, seed, save_every,
               filename_prefix):
        info = motion_placement(model)
        modules = motion_modules(model)
        channels = {name: module.channels for name, module in modules.items()}
        latent = vae.encode(reference_frames[:, :, :, :3])
        latent_hw = tuple(latent.shape[-2:])
        specs = sd15_layer_specs(channels, latent_hw, layer_selection(layers, channels))
        metadata = {"motion_model": info.name, "trained_steps": str(steps), "learning_rate": f"{learning_rate:g}",
                    "loss": loss, "layers_preset": layers, "seed": str(seed)}
        model_sampling = loaded_noise_schedule(model)
        schedule = model_sampling.sigmas.flip(0)
        with torch.inference_mode(False), torch.enable_grad():
            embeddings = MotionEmbeddings.zeros(specs, reference_frames.shape[0],
                                                (latent_hw[0] * LATENT_SCALE, latent_hw[1] * LATENT_SCALE),
                                                info.version, device=model.load_device)
            trainable = add_temporal_variant_provider(model, MotionEmbeddingPatch(embeddings, modules).variants)
            run = EmbeddingTraining(trainable, list(modules.values()), embeddings, model_sampling.sigmas, steps,
                                    learning_rate, LOSSES[loss], seed, save_every, filename_prefix, metadata)
            run_in_sampling(trainable, positive, latent, torch.cat([schedule, schedule.new_zeros(1)]), run)
        trained = detached(embeddings, {**metadata, "final_loss": f"{run.mean_recent_loss():.5f}"})
        log = "\n".join(run.log)
        return {"ui": {"text": [log]}, "result": (trained, log)}  # ui: the loss log shown in the node


NODE_CLASSES = {node_id("TrainMotionEmbeddings"): TrainMotionEmbeddings}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
