"""Cancel, progress and a time estimate inside the steps of a training run through the UNet.

A training step is one UNet call on the whole clip and its backward pass. It is not split into chunks (temporal
attention couples every frame), and at 32 frames of 1024² it takes minutes, so a check between steps is not
enough. Inside a step Cancel is checked (ComfyUI's ``throw_exception_if_processing_interrupted``, the check the
host's own samplers make) after every watched module of the forward pass (the motion modules: one per UNet
block that has one), between the forward and the backward pass, and at every activation the backward pass reads
back; the progress bar moves by :data:`TICKS_PER_STEP` per step – :data:`FORWARD_TICKS` of them through the forward
pass, the rest through the backward pass and the optimizer step. The first step is timed: when its forward pass
ends the log estimates the run, when the step ends it states the measured time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import comfy.model_management
import torch
from torch import nn

TICKS_PER_STEP = 10
FORWARD_TICKS = 4
BACKWARD_PER_FORWARD = 1.0
"""Backward-pass time per forward-pass time in the first estimate. Below the usual 2: no weight gradients (all but
the embeddings is frozen) and only down to the first embedding layer; a whole step of the tiny test model takes
1.6–1.8× a plain forward pass (tests/benchmarks/RESULTS.md), so this errs on the long side."""


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS, XPU …; nothing to wait for on the CPU)."""
    backend = getattr(torch, device.type, None)
    if backend is not None and hasattr(backend, "synchronize") and device.type != "cpu":
        backend.synchronize()


class StepMonitor:
    """Cancel checks, progress and the time estimate of ``steps`` training steps.

    ``watched``: modules the forward pass calls once each, in order (their completion is forward progress);
    ``progress``: a ``comfy.utils.ProgressBar`` of ``steps · TICKS_PER_STEP``; ``note``: receives the log lines;
    ``device``: where the step computes (waited for when the first step is timed).
    Per step: :meth:`forward_done` after the loss, :meth:`unpacked` from the saved-tensor unpack hook,
    :meth:`step_done` after the optimizer step; :meth:`watching` hooks the watched modules for the run.
    """

    def __init__(self, steps: int, watched: Iterable[nn.Module], progress, note: Callable[[str], None],
                 device: torch.device):
        self.steps = steps
        self.watched = list(watched)
        self.progress = progress
        self.note = note
        self.device = device
        self._step = 0  # steps completed
        self._forward_done = 0  # watched modules completed in this step's forward pass
        self._shown = 0  # progress value last reported
        self._started = 0.0
        self._forward_seconds = 0.0

    @contextmanager
    def watching(self) -> Iterator[None]:
        """The watched modules report their completion (and check Cancel) while the block runs."""
        handles = [module.register_forward_hook(self._module_done) for module in self.watched]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def step_started(self) -> None:
        """A step begins (Cancel pressed since the last one stops the run here)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        self._forward_done = 0
        if self._step == 0:
            self._started = time.perf_counter()

    def _module_done(self, module, args, output) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self._forward_done += 1
        self._show(FORWARD_TICKS * min(self._forward_done, len(self.watched)) // max(len(self.watched), 1))

    def forward_done(self) -> None:
        """The loss is computed; the backward pass comes next."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        self._show(FORWARD_TICKS)
        if self._step == 0:
            synchronize(self.device)
            self._forward_seconds = time.perf_counter() - self._started
            estimate = self._forward_seconds * (1.0 + BACKWARD_PER_FORWARD)
            self.note(f"first forward pass took {self._forward_seconds:.1f} s: ≈ {estimate:.1f} s/step, "
                      f"≈ {estimate * self.steps / 60:.1f} min for {self.steps} steps (estimated, backward pass "
                      f"≈ {BACKWARD_PER_FORWARD:g}× the forward pass)")

    def unpacked(self, done: int, saved: int) -> None:
        """The backward pass read back ``done`` of the ``saved`` activations of the forward pass."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        backward_ticks = TICKS_PER_STEP - FORWARD_TICKS - 1  # the last tick is the optimizer step
        self._show(FORWARD_TICKS + backward_ticks * min(done, saved) // max(saved, 1))

    def step_done(self) -> None:
        """The optimizer step is taken."""
        self._show(TICKS_PER_STEP)
        self._step += 1
        if self._step == 1:
            synchronize(self.device)
            seconds = time.perf_counter() - self._started
            self.note(f"step 1 took {seconds:.1f} s (forward {self._forward_seconds:.1f} s): ≈ "
                      f"{seconds * self.steps / 60:.1f} min for {self.steps} steps")

    def _show(self, ticks_in_step: int) -> None:
        value = self._step * TICKS_PER_STEP + ticks_in_step
        if value > self._shown:
            self._shown = value
            self.progress.update_absolute(value, self.steps * TICKS_PER_STEP)

