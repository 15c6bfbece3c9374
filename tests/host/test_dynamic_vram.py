"""DynamicVRAM (``ModelPatcherDynamic``, on by default for NVIDIA since ComfyUI v0.33): the pack's MODELs survive
its load → unpatch → restore cycle and sample the same afterwards.

``ModelPatcherDynamic`` needs CUDA through comfy-aimdo. On the CPU its own ``load``, ``partially_load``,
``unpatch_model`` and ``restore_loaded_backups`` run as they are, driven by ComfyUI's model management
(``load_models_gpu`` / ``unload_all_models``); stood in are only what has no CPU path: aimdo's pinned host buffers
(nothing is pinned here) and ``partially_unload``'s freeing of the VRAM arena a CPU patcher does not have, after
which it restores the backups exactly as the real one does. Sampling runs on plain ``ModelPatcher`` twins of the
same MODELs (comfy.ops' dynamic weight streaming has no CPU path); what is checked is what DynamicVRAM leaves in
the shared model between two samplings.
"""
from __future__ import annotations

import pytest
import torch

import comfy_host

FRAMES = 6
STEPS = 2


class _NoPinnedMemory:
    """Stands in for comfy_aimdo.host_buffer.HostBuffer (pinned RAM, CUDA only); nothing is ever pinned here."""

    def __init__(self, *args):
        self.size = 0

    def truncate(self, *args, **kwargs):
        pass


def _restore_backups_only(self, device_to, memory_to_free=0, force_patch_weights=False):
    """ModelPatcherDynamic.partially_unload without its VRAM arena (a CPU patcher has none): restore the backups."""
    return self.restore_loaded_backups()


@pytest.fixture
def dynamic_vram(host, monkeypatch):
    """The host as ``main.py`` sets it up with DynamicVRAM on: ``CoreModelPatcher`` is ``ModelPatcherDynamic``."""
    import comfy.model_management
    import comfy.model_patcher as mp

    if not hasattr(mp, "ModelPatcherDynamic"):
        pytest.skip("this ComfyUI has no DynamicVRAM (ModelPatcherDynamic arrived in v0.33)")
    import comfy_aimdo.host_buffer

    monkeypatch.setattr(comfy_aimdo.host_buffer, "HostBuffer", _NoPinnedMemory)
    monkeypatch.setattr(mp.ModelPatcherDynamic, "__new__", lambda cls, *args, **kwargs: object.__new__(cls))
    monkeypatch.setattr(mp.ModelPatcherDynamic, "partially_unload", _restore_backups_only)
    monkeypatch.setattr(mp, "CoreModelPatcher", mp.ModelPatcherDynamic)
    comfy.model_management.unload_all_models()
    yield mp
    comfy.model_management.unload_all_models()


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def dynamic_twin(patcher):
    """A clone of ``patcher`` as ComfyUI ≥ 0.33 makes MODELs with DynamicVRAM on: a ``ModelPatcherDynamic``."""
    import comfy.model_patcher as mp

    own_class, patcher.__class__ = patcher.__class__, mp.ModelPatcherDynamic
    try:
        return patcher.clone()
    finally:
        patcher.__class__ = own_class


def plain_twin(patcher):
    """A clone of ``patcher`` (and of its additional models) that loads as a plain ModelPatcher."""
    import comfy.model_patcher as mp

    twin = patcher.clone()
    for model in (twin, *twin.get_nested_additional_models()):
        model.__class__ = mp.ModelPatcher
    return twin


def models_of(patcher) -> list:
    return [patcher, *patcher.get_nested_additional_models()]


def dynamic_cycle(*patchers) -> None:
    """What a GPU run does to the MODELs between two prompts: load them with DynamicVRAM, then unload them."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model for patcher in patchers for model in models_of(patcher)])
    comfy.model_management.unload_all_models()


def snapshot(model) -> tuple[dict, dict]:
    """(every tensor of the BaseModel tree by path, every module by path) – what unloading must give back."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return ({key: tensor.detach().clone() for key, tensor in tensors.items()},
            {path: id(module) for path, module in model.named_modules()})


def assert_restored(model, before: tuple[dict, dict]) -> None:
    tensors, modules = snapshot(model)
    assert modules == before[1], "the unloaded tree holds exactly its own modules again"
    assert tensors.keys() == before[0].keys()
    changed = [key for key in tensors if not torch.equal(tensors[key], before[0][key])]
    assert not changed, f"unloading changed the base model: {changed[:5]}"


def video_sample(model, positive) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(FRAMES, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    return comfy.sample.sample(plain_twin(model), noise, STEPS, 7.0, "euler", "normal", positive, positive, latent,
                               denoise=1.0, disable_pbar=True, seed=0)


@pytest.fixture
def tiny(test_nodes):
    """The tiny checkpoint's MODEL and a prompt, built before ``dynamic_vram`` (the CLIP stays a plain patcher:
    it must run here, and comfy.ops' dynamic streaming has no CPU path)."""
    with torch.inference_mode():
        model, clip, vae = test_nodes.TinyCheckpoint().load(0)
        positive = node("CLIPTextEncode").encode(clip, "a cat walking")[0]
    return model, positive


@pytest.fixture
def pix2gif(tmp_path):
    """A tiny Pix2Gif checkpoint loaded by the pack's loader (before ``dynamic_vram``, see ``tiny``)."""
    import folder_paths
    from workflow import write_tiny_pix2gif

    write_tiny_pix2gif(tmp_path / "checkpoints" / "dynamic_pix2gif.ckpt")
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path / "checkpoints"))
    with torch.inference_mode():
        return node("Pix2Gif_LoadPix2GifModel").load("dynamic_pix2gif.ckpt", True)


@pytest.mark.parametrize("layout,groupnorm", [("v2.ckpt", "per-frame"), ("v1.ckpt", "cross-frame")])
def test_motion_patched_model_survives_unload_and_samples_the_same(tiny, dynamic_vram, motion_files, layout,
                                                                   groupnorm):
    model, positive = tiny
    base = dynamic_twin(model)
    with torch.inference_mode():
        motion = node("Pix2Gif_LoadMotionModel").load(motion_files[layout], "auto")[0]
        patched = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "sqrt_linear (AnimateDiff)", groupnorm)[0]
        assert isinstance(patched, dynamic_vram.ModelPatcherDynamic)
        before = snapshot(base.model)
        first = video_sample(patched, positive)
        dynamic_cycle(patched)
        assert_restored(base.model, before)
        assert torch.equal(video_sample(patched, positive), first)


def animatezero_with_embeddings(base, motion_files):
    """(motion-patched MODEL, + AnimateZero (video-pass K/V, window attention) + motion embeddings) on ``base``."""
    from workflow import tiny_motion_embeddings

    motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v3.safetensors"], "auto")[0]
    patched = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "sqrt_linear (AnimateDiff)", "per-frame")[0]
    animated = node("Pix2Gif_AnimateZero").patch(patched, False, "replace", "all", 0.0, 1.0, True, 0, "down",
                                              kv_source="video pass")[0]
    return patched, node("Pix2Gif_ApplyMotionEmbeddings").apply(animated, tiny_motion_embeddings(0, frames=FRAMES),
                                                                "as_trained", 1.0, "interpolate")[0]


def test_animatezero_with_motion_embeddings_survives_unload(tiny, dynamic_vram, motion_files):
    model, positive = tiny
    base = dynamic_twin(model)
    with torch.inference_mode():
        patched, stacked = animatezero_with_embeddings(base, motion_files)
        before = snapshot(base.model)
        first = video_sample(stacked, positive)
        dynamic_cycle(stacked)
        assert_restored(base.model, before)
        assert torch.equal(video_sample(stacked, positive), first)
        dynamic_cycle(patched)  # the MODEL the stack was built on, loaded after it
        assert_restored(base.model, before)


@pytest.mark.parametrize("confinement", ["soft (motion scale)", "hard"])
def test_regional_motion_on_animatezero_and_embeddings_survives_unload(tiny, dynamic_vram, motion_files,
                                                                       confinement):
    model, positive = tiny
    base = dynamic_twin(model)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 24:48] = 1
    with torch.inference_mode():
        _, stacked = animatezero_with_embeddings(base, motion_files)
        regional = node("Pix2Gif_RegionalMotion").patch(stacked, mask, confinement, 1.0,
                                                        background_motion=0.2)["result"][0]
        assert isinstance(regional, dynamic_vram.ModelPatcherDynamic)
        before = snapshot(base.model)
        first = video_sample(regional, positive)
        assert not torch.equal(first, video_sample(stacked, positive)), "the regional patch acts"
        dynamic_cycle(regional)
        assert_restored(base.model, before)
        assert torch.equal(video_sample(regional, positive), first)


def test_pix2gif_model_and_flownet_survive_unload(pix2gif, dynamic_vram):
    import dataclasses

    plain_model, clip, vae, plain_motion = pix2gif
    model = dynamic_twin(plain_model)
    motion = dataclasses.replace(plain_motion, patcher=dynamic_twin(plain_motion.patcher))
    with torch.inference_mode():
        image = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(0))

        def frames():
            return node("Pix2Gif_Pix2GifSampler").sample(plain_twin(model), clip, vae, motion, image, "clouds",
                                                         "2,8", 1, STEPS, 7.5, 1.8, "euler", "normal",
                                                         "all frames in one batch")[0]

        before = snapshot(model.model), snapshot(motion.patcher.model)
        first = frames()
        dynamic_cycle(model, motion.patcher)
        assert_restored(model.model, before[0])
        assert_restored(motion.patcher.model, before[1])
        assert torch.equal(frames(), first)


def test_the_base_schedule_is_left_alone_after_unload(tiny, dynamic_vram, motion_files):
    """DynamicVRAM restores buffers by path: a patched schedule must not leak into the base model's own."""
    base = dynamic_twin(tiny[0])
    sigmas = base.get_model_object("model_sampling").sigmas.clone()
    with torch.inference_mode():
        motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v2.ckpt"], "auto")[0]
        patched = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "sqrt_linear (AnimateDiff)",
                                                         "per-frame")[0]
        dynamic_cycle(patched)
    assert torch.equal(base.get_model_object("model_sampling").sigmas, sigmas)
    assert not torch.equal(patched.get_model_object("model_sampling").sigmas, sigmas)


def test_motion_weights_are_counted_in_what_comfyui_loads(host, test_nodes, motion_files):
    """ComfyUI's memory accounting for sampling a motion-patched MODEL includes the motion weights (within 1 %)."""
    import comfy.model_management
    import comfy.sample

    with torch.inference_mode():
        model, clip, _ = test_nodes.TinyCheckpoint().load(0)
        positive = node("CLIPTextEncode").encode(clip, "a cat walking")[0]
        motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v2.ckpt"], "auto")[0]
        patched = node("Pix2Gif_ApplyMotionModel").apply(model, motion, 1.0, "keep model's", "per-frame")[0]
        comfy.model_management.unload_all_models()
        expected = comfy.model_management.module_size(model.model) + comfy.model_management.module_size(
            motion.modules)

        latent = torch.zeros(FRAMES, 4, 8, 8)
        comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 0), 1, 7.0, "euler", "normal", positive,
                            positive, latent, denoise=1.0, disable_pbar=True, seed=0)
        counted = sum(loaded.model_memory() for loaded in comfy.model_management.current_loaded_models
                      if loaded.model is not None and loaded.model.model in (model.model, motion.modules))
    assert counted == pytest.approx(expected, rel=0.01)
    comfy.model_management.unload_all_models()


def test_an_untested_tree_is_noted_not_refused(tmp_path):
    assert comfy_host.host_version(comfy_host.host_root("0.33.0")) == "0.33.0"
    assert comfy_host.host_version(tmp_path) is None


@pytest.fixture
def follow_your_click_conditioning(tiny, test_nodes):
    """Follow-Your-Click Conditioning of a random photo for the tiny model (built before ``dynamic_vram``)."""
    _, positive = tiny
    vae = test_nodes.TinyCheckpoint().load(0)[2]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return node("Pix2Gif_FollowYourClickConditioning").encode(positive, positive, vae, image, 64, 64, FRAMES, 2,
                                                                  4.0, 0.0, 0)


def test_follow_your_click_model_survives_unload_and_samples_the_same(tiny, follow_your_click_conditioning,
                                                                      dynamic_vram, tmp_path):
    import comfy.sample
    import workflow

    model, _ = tiny
    positive, negative, latent = follow_your_click_conditioning
    name = workflow._tiny_file(tmp_path, "follow_your_click", workflow.TINY_FOLLOW_YOUR_CLICK_FILE,
                               workflow._write_tiny_follow_your_click)

    def sample(patcher) -> torch.Tensor:
        noise = comfy.sample.prepare_noise(latent["samples"], 0)
        return comfy.sample.sample(plain_twin(patcher), noise, STEPS, 7.0, "euler", "normal", positive, negative,
                                   latent["samples"], denoise=1.0, disable_pbar=True, seed=0)

    with torch.inference_mode():
        loaded = node("Pix2Gif_LoadFollowYourClickModel").load(model, name)[0]
        assert isinstance(loaded, dynamic_vram.ModelPatcherDynamic)
        before = snapshot(loaded.model)
        first = sample(loaded)
        dynamic_cycle(loaded)
        assert_restored(loaded.model, before)
        assert torch.equal(sample(loaded), first)
