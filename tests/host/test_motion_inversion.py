"""Motion Inversion in a real host: apply / combine / save / load embeddings, training, the noise prior, errors."""
from __future__ import annotations

import hashlib
import math
import shutil
import sys

import pytest
import torch
from pix2gif_core.motion_inversion.embeddings import LayerEmbedding, MotionEmbeddings, save_motion_embeddings

import workflow
from full_disk import NO_SPACE, fill_disk
from graphs import txt2vid
from progress import assert_complete_bars, progress_bars, recorded_progress

FRAMES = 8
TRAIN_FRAMES = 4
MOTION_FILE = "v3.safetensors"
#: Motion Inversion trains the temporal attentions of its UNet3D's down_blocks.2 and up_blocks.1 (its config's
#: [down,1280], [up,1280]; the 1/64 blocks down_blocks.3 and up_blocks.0 have none), at 1/32 of the image
#: (methods.md §4.2). AnimateDiff's SD1.5 modules at that level: down_blocks.2's two, up_blocks.1's three.
OFFICIAL_MODULES = ("down_blocks.2.motion_modules.0", "down_blocks.2.motion_modules.1",
                    "up_blocks.1.motion_modules.0", "up_blocks.1.motion_modules.1", "up_blocks.1.motion_modules.2")
#: The former default ("1280"): every down/up module of the widest channels (128 in the tiny motion model), the
#: official ones plus the 1/64 level.
FORMER_DEFAULT_MODULES = {**{module: 128 for module in OFFICIAL_MODULES},
                          **{f"down_blocks.3.motion_modules.{index}": 128 for index in range(2)},
                          **{f"up_blocks.0.motion_modules.{index}": 128 for index in range(3)}}
NODE_IDS = ("ApplyMotionEmbeddings", "CombineMotionEmbeddings", "SaveMotionEmbeddings", "LoadMotionEmbeddings",
            "MotionNoisePrior", "TrainMotionEmbeddings")


def node(class_type: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[class_type]()


@pytest.fixture(scope="module")
def embeddings_dir(host, tmp_path_factory):
    """A fresh models/motion_embeddings folder, first in the list (where the nodes save)."""
    import folder_paths

    saved = folder_paths.folder_names_and_paths["motion_embeddings"]
    folder = tmp_path_factory.mktemp("motion_embeddings")
    workflow.use_embeddings_folder(folder)
    yield folder
    folder_paths.folder_names_and_paths["motion_embeddings"] = saved


def stored(folder, name: str, embeddings: MotionEmbeddings) -> str:
    save_motion_embeddings(embeddings, folder / name)
    return name


def scaled(embeddings: MotionEmbeddings, scale: float = 0.0, **changes) -> MotionEmbeddings:
    """``embeddings`` × ``scale`` (0: zero embeddings of the same layout) with constructor fields changed."""
    layers = {name: LayerEmbedding(layer.qk * scale, layer.v * scale, layer.token_hw)
              for name, layer in embeddings.layers.items()}
    fields = {"frames": embeddings.frames, "pixel_hw": embeddings.pixel_hw,
              "motion_module_version": embeddings.motion_module_version, "metadata": embeddings.metadata, **changes}
    return MotionEmbeddings(layers, **fields)


def embedding_prompt(motion_file: str, names: list[str], *, weights: tuple[float, ...] = (), mode="as_trained",
                     strength=1.0, resolution="interpolate", size=64, frames=FRAMES, model="apply_mm") -> dict:
    """txt2vid with the embedding files ``names`` (combined with ``weights`` when several) applied to the MODEL."""
    prompt = txt2vid(motion_file, frames=frames, size=size)
    for index, name in enumerate(names, start=1):
        prompt[f"load_emb_{index}"] = {"class_type": "Pix2Gif_LoadMotionEmbeddings",
                                       "inputs": {"embeddings_name": name}}
    source = ["load_emb_1", 0]
    if len(names) > 1:
        inputs = {f"weight_{k}": 1.0 for k in range(1, 5)}
        inputs |= {f"weight_{k}": weight for k, weight in enumerate(weights, start=1)}
        inputs |= {f"embeddings_{k}": [f"load_emb_{k}", 0] for k in range(1, len(names) + 1)}
        prompt["combine"] = {"class_type": "Pix2Gif_CombineMotionEmbeddings", "inputs": inputs}
        source = ["combine", 0]
    prompt["apply_emb"] = {"class_type": "Pix2Gif_ApplyMotionEmbeddings",
                           "inputs": {"model": [model, 0], "motion_embeddings": source, "mode": mode,
                                      "strength": strength, "resolution": resolution}}
    prompt["sample"]["inputs"]["model"] = ["apply_emb", 0]
    return prompt


def sampled(host, test_nodes, prompt: dict) -> torch.Tensor:
    result = host.run(prompt)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["latent"]


def failure(host, prompt: dict) -> str:
    result = host.run(prompt)
    assert not result.success
    return str(result.validation_error) if result.validation_error is not None else result.error["exception_message"]


def test_nodes_are_registered(host):
    import nodes

    for name in NODE_IDS:
        assert nodes.NODE_CLASS_MAPPINGS[f"Pix2Gif_{name}"].CATEGORY == "Pix2Gif/Motion Inversion"


# ---------------------------------------------------------------------------------------------------------------
# Apply and combine


def test_zero_embeddings_leave_animatediff_unchanged(host, test_nodes, motion_files, embeddings_dir):
    zero = stored(embeddings_dir, "zero.safetensors", scaled(workflow.tiny_motion_embeddings(frames=FRAMES)))
    plain = sampled(host, test_nodes, txt2vid(motion_files[MOTION_FILE], frames=FRAMES))
    for mode in ("as_trained", "camera", "object"):
        patched = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [zero], mode=mode))
        assert torch.equal(plain, patched), mode


def test_embeddings_move_the_output_by_mode_and_strength(host, test_nodes, motion_files, embeddings_dir):
    name = stored(embeddings_dir, "random.safetensors", workflow.tiny_motion_embeddings(1, frames=FRAMES))
    plain = sampled(host, test_nodes, txt2vid(motion_files[MOTION_FILE], frames=FRAMES))
    by_mode = {mode: sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [name], mode=mode))
               for mode in ("as_trained", "camera", "object")}
    for mode, latent in by_mode.items():
        assert not torch.allclose(latent, plain, atol=1e-3), mode
    assert not torch.allclose(by_mode["as_trained"], by_mode["camera"], atol=1e-3)
    assert not torch.allclose(by_mode["as_trained"], by_mode["object"], atol=1e-3)
    off = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [name], strength=0.0))
    assert torch.equal(off, plain)


def test_combining_is_linear(host, test_nodes, motion_files, embeddings_dir):
    first, second = workflow.tiny_motion_embeddings(2, frames=FRAMES), workflow.tiny_motion_embeddings(3, frames=FRAMES)
    a, b = 0.5, -1.5
    summed = MotionEmbeddings({name: LayerEmbedding(a * layer.qk + b * second.layers[name].qk,
                                                    a * layer.v + b * second.layers[name].v, layer.token_hw)
                               for name, layer in first.layers.items()},
                              FRAMES, first.pixel_hw, first.motion_module_version)
    names = [stored(embeddings_dir, "first.safetensors", first), stored(embeddings_dir, "second.safetensors", second)]
    combined = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], names, weights=(a, b)))
    reference = sampled(host, test_nodes, embedding_prompt(
        motion_files[MOTION_FILE], [stored(embeddings_dir, "summed.safetensors", summed)]))
    assert torch.equal(combined, reference)
    alone = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], names[:1]))
    assert not torch.allclose(combined, alone, atol=1e-3)


def test_frame_count_and_size_other_than_trained_are_interpolated(host, test_nodes, motion_files, embeddings_dir):
    name = stored(embeddings_dir, "sixteen.safetensors", workflow.tiny_motion_embeddings(4, frames=16))
    latent = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [name], size=128, frames=6))
    assert latent.shape == (6, 4, 16, 16) and torch.isfinite(latent).all()


def test_embeddings_trained_with_the_former_default_still_load_and_apply(host, test_nodes, motion_files,
                                                                         embeddings_dir):
    former = scaled(workflow.tiny_motion_embeddings(8, frames=FRAMES, modules=FORMER_DEFAULT_MODULES), 1.0,
                    metadata={"layers_preset": "1280", "trained_steps": "400"})
    name = stored(embeddings_dir, "former_default.safetensors", former)
    loaded = node("Pix2Gif_LoadMotionEmbeddings").load(name)[0]
    assert set(loaded.layers) == set(former.layers) and loaded.metadata["layers_preset"] == "1280"
    official_only = MotionEmbeddings({layer: embedding for layer, embedding in former.layers.items()
                                      if layer.rsplit(".attention_blocks", 1)[0] in OFFICIAL_MODULES},
                                     FRAMES, former.pixel_hw, former.motion_module_version)
    plain = sampled(host, test_nodes, txt2vid(motion_files[MOTION_FILE], frames=FRAMES))
    applied = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [name]))
    without_lowest = sampled(host, test_nodes, embedding_prompt(
        motion_files[MOTION_FILE], [stored(embeddings_dir, "former_official_part.safetensors", official_only)]))
    assert not torch.allclose(applied, plain, atol=1e-3)
    assert not torch.allclose(applied, without_lowest, atol=1e-4), "the file's 1/64 layers act as well"


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_save_then_load_is_exact_with_metadata(host, motion_files, embeddings_dir):
    original = workflow.tiny_motion_embeddings(5, frames=FRAMES)
    name = stored(embeddings_dir, "shared.safetensors", original)
    prompt = {"load": {"class_type": "Pix2Gif_LoadMotionEmbeddings", "inputs": {"embeddings_name": name}},
              "save": {"class_type": "Pix2Gif_SaveMotionEmbeddings",
                       "inputs": {"motion_embeddings": ["load", 0], "filename_prefix": "round/trip"}}}
    saved = []
    for _ in range(2):
        result = host.run(prompt)
        assert result.success, result.error or result.validation_error
        saved.append(result.outputs["save"]["text"][0])
    assert [path.replace("\\", "/") for path in saved] == ["round/trip_00001.safetensors",
                                                           "round/trip_00002.safetensors"]
    loaded = node("Pix2Gif_LoadMotionEmbeddings").load(saved[0])[0]
    assert (loaded.frames, loaded.pixel_hw, loaded.motion_module_version, loaded.metadata) == (
        original.frames, original.pixel_hw, original.motion_module_version, original.metadata)
    assert list(loaded.layers) == list(original.layers)
    for layer_name, layer in original.layers.items():
        assert torch.equal(loaded.layers[layer_name].qk, layer.qk) and torch.equal(loaded.layers[layer_name].v, layer.v)
        assert loaded.layers[layer_name].token_hw == layer.token_hw


@pytest.mark.parametrize("prefix", ["../outside", "/tmp/absolute", ""])
def test_save_refuses_a_prefix_outside_the_folder(host, embeddings_dir, prefix):
    name = stored(embeddings_dir, "kept.safetensors", workflow.tiny_motion_embeddings(6, frames=FRAMES))
    message = failure(host, {
        "load": {"class_type": "Pix2Gif_LoadMotionEmbeddings", "inputs": {"embeddings_name": name}},
        "save": {"class_type": "Pix2Gif_SaveMotionEmbeddings",
                 "inputs": {"motion_embeddings": ["load", 0], "filename_prefix": prefix}}})
    assert "Save Motion Embeddings" in message and f"filename_prefix '{prefix}'" in message


# ---------------------------------------------------------------------------------------------------------------
# Training


def moving_square(frames: int = TRAIN_FRAMES, size: int = 64) -> torch.Tensor:
    """IMAGE clip (frames, size, size, 3): a bright square sliding right over a dark background."""
    clip = torch.full((frames, size, size, 3), 0.2)
    for frame in range(frames):
        clip[frame, 20:36, 8 + 6 * frame:24 + 6 * frame] = 0.9
    return clip


def digest(*modules: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of every state-dict tensor."""
    sha = hashlib.sha256()
    for module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            sha.update(key.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


class TrainingSetup:
    """The tiny checkpoint with a motion model, built under inference mode as the executor's nodes build it."""

    def __init__(self, test_nodes, motion_file: str):
        with torch.inference_mode():
            self.model, clip, self.vae = test_nodes.TinyCheckpoint().load(0)
            self.positive = node("CLIPTextEncode").encode(clip, "a square sliding right")[0]
            self.motion = node("Pix2Gif_LoadMotionModel").load(motion_file, "auto")[0]
            self.patched = node("Pix2Gif_ApplyMotionModel").apply(self.model, self.motion, 1.0,
                                                                  "sqrt_linear (AnimateDiff)", "per-frame")[0]

    def weights(self) -> tuple[str, list[bool]]:
        """(digest of the UNet and motion-module weights, their requires_grad flags), with no model loaded."""
        import comfy.model_management

        comfy.model_management.unload_all_models()
        modules = (self.model.model.diffusion_model, self.motion.modules)
        return digest(*modules), [p.requires_grad for module in modules for p in module.parameters()]

    def train(self, steps: int, learning_rate: float, *, save_every: int = 0, prefix: str = "training/run",
              seed: int = 7, layers: str | None = None):
        """The node's train() (``layers`` None: its default preset)."""
        trainer = node("Pix2Gif_TrainMotionEmbeddings")
        layers = layers or trainer.INPUT_TYPES()["required"]["layers"][1]["default"]
        with torch.inference_mode():
            output = trainer.train(self.patched, self.positive, self.vae, moving_square(), steps, learning_rate,
                                   "plain", layers, seed, save_every, prefix)
        assert output["ui"]["text"] == [output["result"][1]], "the node shows the loss log it outputs"
        return output["result"]


def window_means(log: str) -> list[float]:
    """The 'mean of the last 10' figures of a loss log, in step order."""
    return [float(line.rsplit(" ", 1)[-1]) for line in log.splitlines() if "mean of the last 10 " in line]


def test_training_lowers_the_loss_and_changes_no_other_weight(host, test_nodes, motion_files, embeddings_dir):
    setup = TrainingSetup(test_nodes, motion_files[MOTION_FILE])
    before = setup.weights()
    trained, log = setup.train(20, 0.1)
    assert setup.weights() == before, "the UNet and motion-module weights and their grad flags are untouched"
    _, control_log = setup.train(20, 1e-6)  # the same noise draws (same seed) without learning
    trained_means, control_means = window_means(log), window_means(control_log)
    assert len(trained_means) == 2 and trained_means[1] < trained_means[0], log
    assert trained_means[1] < control_means[1] - 0.02, (log, control_log)
    assert set(trained.layers) == {f"{module}.attention_blocks.{block}" for module in OFFICIAL_MODULES
                                   for block in (0, 1)}, "the default: Motion Inversion's own layers"
    assert {layer.token_hw for layer in trained.layers.values()} == {(2, 2)}, "64 px / 32"
    assert (trained.frames, trained.pixel_hw, trained.motion_module_version) == (TRAIN_FRAMES, (64, 64), "v3")
    assert all(t.abs().max() > 0 and not t.requires_grad for layer in trained.layers.values() for t in layer.tensors())
    assert {"trained_steps": "20", "learning_rate": "0.1", "loss": "plain", "layers_preset": "official"}.items() <= \
        trained.metadata.items()
    lines = log.splitlines()
    assert "first forward pass took" in lines[0] and "s/step" in lines[0] and "min for 20 steps" in lines[0], log
    assert lines[1].startswith("step 1 took") and "min for 20 steps" in lines[1], log
    assert [line.split(":")[0] for line in lines[2:]] == ["step 1/20", "step 10/20", "step 20/20"], \
        "the loss every 10 steps (and the first and last)"


def test_training_is_reproducible_per_seed(host, test_nodes, motion_files, embeddings_dir):
    setup = TrainingSetup(test_nodes, motion_files[MOTION_FILE])
    runs = [setup.train(3, 0.05, seed=seed)[0] for seed in (5, 5, 6)]
    same = [all(torch.equal(t, u) for name, layer in runs[0].layers.items()
                for t, u in zip(layer.tensors(), run.layers[name].tensors())) for run in runs[1:]]
    assert same == [True, False], "the seed fixes every draw (timesteps, noise); another seed changes them"


def test_a_training_step_draws_on_the_latents_device_and_reads_nothing_back(host, pack, monkeypatch):
    """One optimiser step with a stand-in denoiser: every random draw names the latents' device and uses a generator
    there, and the training code converts no tensor to a Python number (each would wait for the device)."""
    training = sys.modules[f"{pack.__name__}.nodes.motion_inversion_training"]
    monitor = sys.modules[f"{pack.__name__}.nodes.step_monitor"]
    x0 = torch.randn(TRAIN_FRAMES, 4, 8, 8)
    weight = torch.zeros(1, requires_grad=True)
    embeddings = [weight]

    class Params:
        @staticmethod
        def parameters():
            return embeddings

    draws, conversions = [], []
    own_files = (training.__file__, sys.modules[f"{pack.__name__}.pix2gif_core.motion_inversion.loss"].__file__)

    class Recording(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.randn, torch.randint):
                draws.append((kwargs.get("device"), kwargs["generator"].device))
            name = getattr(func, "__name__", "")
            if name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__") and \
                    sys._getframe(1).f_code.co_filename in own_files:
                conversions.append(name)
            return func(*args, **kwargs)

    for loss in ("plain", "debiased"):
        optimiser = training.EmbeddingOptimiser(Params, torch.linspace(0.1, 10.0, 50), 0.01, training.LOSSES[loss],
                                                3, x0.device, False)
        steps = monitor.StepMonitor(1, [], type("Bar", (), {"update_absolute": lambda *args: None})(),
                                    lambda line: None, x0.device)
        with Recording():
            optimiser.step(lambda x, sigma: x * (1 - weight), x0, steps)
    assert draws and all(draw == (x0.device, x0.device) for draw in draws), draws
    assert conversions == [], conversions


@pytest.fixture
def cancel_reset():
    """Clear a Cancel a test pressed, whatever the test's outcome."""
    import comfy.model_management

    yield
    comfy.model_management.interrupt_current_processing(False)


@pytest.mark.parametrize("moment", ["start", "end", "backward"])
def test_cancel_inside_a_training_step_stops_that_step(host, test_nodes, motion_files, embeddings_dir, cancel_reset,
                                                       moment):
    """Cancel pressed as step 2's UNet call starts (inside its forward pass), as it returns (between forward and
    backward pass) or as its backward pass begins: step 2 never completes, only step 1's file is written."""
    import comfy.model_management

    setup = TrainingSetup(test_nodes, motion_files[MOTION_FILE])
    before = setup.weights()
    unpatched = setup.patched
    setup.patched = test_nodes.CancelAtModelCall().patch(unpatched, 2, "model_calls", moment)[0]  # 1 call per step
    prefix = f"cancelled_{moment}/run"
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        setup.train(10, 0.05, save_every=1, prefix=prefix)
    calls = (test_nodes.CAPTURED["model_calls"], test_nodes.CAPTURED["model_calls_finished"])
    assert calls == ((2, 1) if moment == "start" else (2, 2)), "the cancelled forward pass stops inside the UNet call"
    assert setup.weights() == before
    folder = embeddings_dir / prefix.split("/")[0]
    assert sorted(path.name for path in folder.iterdir()) == ["run_step1.safetensors"], "step 2 is not completed"
    assert node("Pix2Gif_LoadMotionEmbeddings").load(f"{prefix}_step1.safetensors")[0].metadata["trained_steps"] == "1"
    setup.patched = unpatched
    assert setup.train(2, 0.05)[0].metadata["trained_steps"] == "2", "the next run works"


def training_prompt(motion_file: str, *, steps: int = 3, layers: str = "640+1280", save_every: int = 2,
                    prefix: str = "executor/run") -> dict:
    """Load the bundled image, make a 3-frame clip of it with Motion Preview, train on it, save the result."""
    prompt = txt2vid(motion_file)
    del prompt["sample"], prompt["capture"]
    return prompt | {
        "image": {"class_type": "LoadImage", "inputs": {"image": "sample_landscape.png"}},
        "small": {"class_type": "ImageScale", "inputs": {"image": ["image", 0], "upscale_method": "area",
                                                         "width": 64, "height": 64, "crop": "disabled"}},
        "clip": {"class_type": "Pix2Gif_MotionPreview",
                 "inputs": {"image": ["small", 0], "motion": "translate", "magnitude": 8.0, "direction": 0.0,
                            "frames": 3, "edge": "reflect", "center_x": 0.5, "center_y": 0.5, "sway_cycles": 1.0}},
        "train": {"class_type": "Pix2Gif_TrainMotionEmbeddings",
                  "inputs": {"model": ["apply_mm", 0], "positive": ["pos", 0], "vae": ["ckpt", 2],
                             "reference_frames": ["clip", 0], "steps": steps, "learning_rate": 0.02,
                             "loss": "debiased", "layers": layers, "seed": 1, "save_every": save_every,
                             "filename_prefix": prefix}},
        "save": {"class_type": "Pix2Gif_SaveMotionEmbeddings",
                 "inputs": {"motion_embeddings": ["train", 0], "filename_prefix": "executor/final"}},
    }


def test_training_runs_in_the_executor_with_intermediate_saves(host, pack, motion_files, embeddings_dir,
                                                               monkeypatch):
    import comfy.utils
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0, raising=False)  # see every report
    with recorded_progress() as reports:
        result = host.run(training_prompt(motion_files[MOTION_FILE]))
    assert result.success, result.error or result.validation_error
    final = node("Pix2Gif_LoadMotionEmbeddings").load(result.outputs["save"]["text"][0])[0]
    step2 = node("Pix2Gif_LoadMotionEmbeddings").load("executor/run_step2.safetensors")[0]
    assert (final.metadata["trained_steps"], step2.metadata["trained_steps"], final.metadata["loss"]) == \
        ("3", "2", "debiased")
    assert len(final.layers) == 2 * (6 + 9), "640+1280: the 6 down and 9 up modules of the three narrowest levels"
    ticks = sys.modules[f"{pack.__name__}.nodes.step_monitor"]
    assert_complete_bars(reports, total=3 * ticks.TICKS_PER_STEP, count=1)
    in_step = {value % ticks.TICKS_PER_STEP for value in progress_bars(reports, 3 * ticks.TICKS_PER_STEP)[0]}
    assert in_step & set(range(1, ticks.FORWARD_TICKS)), "the bar moves during the forward pass"
    assert in_step & set(range(ticks.FORWARD_TICKS + 1, ticks.TICKS_PER_STEP)), "… and during the backward pass"


@pytest.fixture
def full_disk(pack, monkeypatch):
    """Every file the pack writes from now on fails as on a full disk."""
    fill_disk(pack, monkeypatch)
    return monkeypatch


def test_a_full_disk_while_saving_gives_one_clear_message(host, motion_files, embeddings_dir, full_disk):
    name = stored(embeddings_dir, "to_save.safetensors", workflow.tiny_motion_embeddings(9, frames=FRAMES))
    prompt = {"load": {"class_type": "Pix2Gif_LoadMotionEmbeddings", "inputs": {"embeddings_name": name}},
              "save": {"class_type": "Pix2Gif_SaveMotionEmbeddings",
                       "inputs": {"motion_embeddings": ["load", 0], "filename_prefix": "full/disk"}}}
    message = failure(host, prompt)
    assert message.startswith("[Save Motion Embeddings]") and "disk_00001.safetensors" in message, message
    assert NO_SPACE in message, message
    assert list((embeddings_dir / "full").iterdir()) == [], "no partial file is left"
    full_disk.undo()
    result = host.run(prompt)
    assert result.success and result.outputs["save"]["text"][0].replace("\\", "/") == "full/disk_00001.safetensors"


def test_a_full_disk_during_training_saves_gives_one_clear_message(host, motion_files, embeddings_dir, full_disk):
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    message = failure(host, training_prompt(motion_files[MOTION_FILE], steps=2, save_every=1, prefix="full_train/run"))
    assert message.startswith("[Train Motion Embeddings]") and "run_step1.safetensors" in message, message
    assert NO_SPACE in message, message
    assert list((embeddings_dir / "full_train").iterdir()) == []


def test_a_single_reference_frame_is_refused(host, motion_files):
    from run_workflow import install_workflow_assets

    install_workflow_assets()
    prompt = txt2vid(motion_files[MOTION_FILE])
    prompt["image"] = {"class_type": "LoadImage", "inputs": {"image": "sample_landscape.png"}}
    prompt["sample"] = {"class_type": "Pix2Gif_TrainMotionEmbeddings",
                        "inputs": {"model": ["apply_mm", 0], "positive": ["pos", 0], "vae": ["ckpt", 2],
                                   "reference_frames": ["image", 0], "steps": 3, "learning_rate": 0.02,
                                   "loss": "plain", "layers": "1280", "seed": 0, "save_every": 0,
                                   "filename_prefix": "x"}}
    prompt["capture"] = {"class_type": "Pix2Gif_SaveMotionEmbeddings",
                         "inputs": {"motion_embeddings": ["sample", 0], "filename_prefix": "never"}}
    message = failure(host, prompt)
    assert "Train Motion Embeddings" in message and "reference_frames holds 1 frame" in message


# ---------------------------------------------------------------------------------------------------------------
# Noise prior


def prior_prompt(motion_file: str, prior_weight: float, *, steps: int = 4, frames: int = FRAMES,
                 cfg: float = 7.0) -> dict:
    """txt2vid whose start noise comes from a noise prior of a reference clip (sampled by the same graph)."""
    prompt = txt2vid(motion_file, frames=frames, steps=steps, seed=11)
    prompt["reference"] = {"class_type": "Pix2Gif_GifSampler",
                           "inputs": {**prompt["sample"]["inputs"], "frames": FRAMES, "seed": 3}}
    prompt["prior"] = {"class_type": "Pix2Gif_MotionNoisePrior",
                       "inputs": {"model": ["apply_mm", 0], "positive": ["pos", 0], "reference": ["reference", 0],
                                  "steps": steps, "scheduler": "normal", "prior_weight": prior_weight, "seed": 11}}
    prompt["sample"]["inputs"] |= {"noise": ["prior", 0], "cfg": cfg}
    prompt["capture_noise"] = {"class_type": "Pix2GifTest_CaptureLatent",
                               "inputs": {"samples": ["prior", 0], "key": "noise"}}
    prompt["capture_reference"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                   "inputs": {"samples": ["reference", 0], "key": "reference"}}
    return prompt


def test_noise_prior_blends_the_inverted_clip_with_the_seeds_noise(host, test_nodes, motion_files):
    seeded = sampled(host, test_nodes, txt2vid(motion_files[MOTION_FILE], frames=FRAMES, steps=4, seed=11))
    prompt = prior_prompt(motion_files[MOTION_FILE], 0.0)
    for weight in (1.0, 0.3):
        prompt[f"prior_{weight}"] = {**prompt["prior"], "inputs": {**prompt["prior"]["inputs"], "prior_weight": weight}}
        prompt[f"capture_{weight}"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                       "inputs": {"samples": [f"prior_{weight}", 0], "key": f"noise_{weight}"}}
    assert torch.equal(sampled(host, test_nodes, prompt), seeded), "prior 0 = the GIF sampler's own noise for the seed"
    inverted, fresh = test_nodes.CAPTURED["noise_1.0"], test_nodes.CAPTURED["noise"]
    expected = math.sqrt(0.3) * inverted + math.sqrt(0.7) * fresh
    assert torch.allclose(test_nodes.CAPTURED["noise_0.3"], expected, atol=1e-6)
    assert 0.5 < inverted.std() < 2.0, "the inverted clip as unit-scale start noise"


def test_noise_prior_one_starts_sampling_at_the_inverted_clip(host, test_nodes, motion_files):
    """DDIM inversion round trip: sampling (euler, cfg 1, same schedule) from the inverted clip's noise comes back
    near the clip; from the seed's noise it does not."""
    prompt = prior_prompt(motion_files[MOTION_FILE], 1.0, steps=8, cfg=1.0)
    fresh_inputs = {key: value for key, value in prompt["sample"]["inputs"].items() if key != "noise"}
    prompt["fresh"] = {"class_type": "Pix2Gif_GifSampler", "inputs": fresh_inputs}
    prompt["capture_fresh"] = {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["fresh", 0],
                                                                                     "key": "fresh"}}
    reconstructed = sampled(host, test_nodes, prompt)
    reference, fresh = test_nodes.CAPTURED["reference"], test_nodes.CAPTURED["fresh"]
    error, unrelated = (reconstructed - reference).abs().mean(), (fresh - reference).abs().mean()
    assert error < 0.25 * unrelated, (float(error), float(unrelated))


def test_noise_of_another_size_is_refused(host, motion_files):
    message = failure(host, prior_prompt(motion_files[MOTION_FILE], 0.5, frames=6))
    assert "GIF Sampler" in message and "noise has shape (8, 4, 8, 8)" in message and "(6, 4, 8, 8)" in message


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_embeddings_of_another_motion_module_version_are_refused(host, motion_files, embeddings_dir):
    name = stored(embeddings_dir, "from_v2.safetensors", workflow.tiny_motion_embeddings(frames=FRAMES, version="v2"))
    message = failure(host, embedding_prompt(motion_files[MOTION_FILE], [name]))
    assert "Apply Motion Embeddings" in message and "motion_embeddings" in message and "v2" in message \
        and "v3" in message


def test_embeddings_of_another_channel_layout_are_refused(host, motion_files, embeddings_dir):
    narrow = workflow.tiny_motion_embeddings(frames=FRAMES, modules={"down_blocks.2.motion_modules.1": 64})
    message = failure(host, embedding_prompt(motion_files[MOTION_FILE],
                                             [stored(embeddings_dir, "narrow.safetensors", narrow)]))
    assert "Apply Motion Embeddings" in message and "64 channels" in message and "128" in message


def test_incompatible_embeddings_do_not_combine(host, motion_files, embeddings_dir):
    names = [stored(embeddings_dir, "eight.safetensors", workflow.tiny_motion_embeddings(frames=8)),
             stored(embeddings_dir, "six.safetensors", workflow.tiny_motion_embeddings(frames=6))]
    message = failure(host, embedding_prompt(motion_files[MOTION_FILE], names))
    assert "Combine Motion Embeddings" in message and "embeddings_2" in message and "6 trained frames vs 8" in message


def test_a_file_that_is_no_embedding_is_refused(host, motion_files, embeddings_dir):
    import folder_paths

    shutil.copy(folder_paths.get_full_path("animatediff_models", motion_files[MOTION_FILE]),
                embeddings_dir / "motion_module.safetensors")
    message = failure(host, embedding_prompt(motion_files[MOTION_FILE], ["motion_module.safetensors"]))
    assert "Load Motion Embeddings" in message and "motion_module.safetensors" in message \
        and "not a motion embedding" in message


def test_refuse_policy_names_the_trained_and_sampled_sizes(host, test_nodes, motion_files, embeddings_dir):
    name = stored(embeddings_dir, "at64.safetensors", workflow.tiny_motion_embeddings(7, frames=FRAMES))
    message = failure(host, embedding_prompt(motion_files[MOTION_FILE], [name], size=128, resolution="refuse"))
    assert "Apply Motion Embeddings" in message and "64×64 px" in message and "128×128 px" in message
    camera = sampled(host, test_nodes, embedding_prompt(motion_files[MOTION_FILE], [name], size=128,
                                                        resolution="refuse", mode="camera"))
    assert camera.shape == (FRAMES, 4, 16, 16), "camera mode has no value embedding: nothing to refuse"


def test_apply_needs_a_motion_model(host, embeddings_dir):
    name = stored(embeddings_dir, "any.safetensors", workflow.tiny_motion_embeddings(frames=FRAMES))
    message = failure(host, embedding_prompt(None, [name], model="ckpt"))
    assert "Apply Motion Embeddings" in message and "no motion model" in message


def test_empty_folder_says_where_to_put_files(host, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "motion_embeddings", ([str(tmp_path)], {".safetensors"}))
    if hasattr(folder_paths, "filename_list_cache"):
        monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    message = failure(host, embedding_prompt(None, ["zoom.safetensors"], model="ckpt"))
    assert "no motion embeddings found" in message and str(tmp_path) in message
