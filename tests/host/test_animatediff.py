"""Motion modules inside a real ComfyUI UNet: loading every official layout, injection, frame mixing, errors."""
from __future__ import annotations

import pytest
import torch

from graphs import txt2vid

FRAMES = 8


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def sampled(host, test_nodes, prompt, key="latent") -> torch.Tensor:
    result = host.run(prompt)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED[key]


def failure_message(result) -> str:
    assert not result.success
    if result.validation_error is not None:
        return str(result.validation_error)
    return result.error["exception_message"]


def test_nodes_are_registered_under_one_prefix_and_category(host):
    import nodes

    ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("Pix2Gif_")}
    assert {"Pix2Gif_LoadMotionModel", "Pix2Gif_ApplyMotionModel", "Pix2Gif_GifSampler",
            "Pix2Gif_SaveAnimation"} <= set(ours)
    assert all(cls.CATEGORY == "Pix2Gif" or cls.CATEGORY.startswith("Pix2Gif/") for cls in ours.values())
    assert not any(cls.CATEGORY.startswith("Pix2Gif/Pix2Gif") for cls in ours.values())
    names = {k: nodes.NODE_DISPLAY_NAME_MAPPINGS[k] for k in ours}
    assert all(name.count("Pix2Gif") == 1 for name in names.values()), names
    assert names["Pix2Gif_LoadPix2GifModel"] == "Load Pix2Gif Model"
    assert names["Pix2Gif_MotionPreview"] == "Motion Preview (Pix2Gif)"


def test_every_widget_input_has_a_tooltip_and_combos_are_lists(host):
    """ComfyUI validates combo values only against lists: a tuple lets a stale or edited value reach the node."""
    import nodes

    tuples = [f"{key}.{name}" for key, cls in nodes.NODE_CLASS_MAPPINGS.items() if key.startswith("Pix2Gif_")
              for section in ("required", "optional") for name, spec in cls.INPUT_TYPES().get(section, {}).items()
              if isinstance(spec[0], tuple)]
    assert not tuples, tuples
    missing = []
    for key, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if not key.startswith("Pix2Gif_"):
            continue
        inputs = cls.INPUT_TYPES()
        for name, spec in {**inputs.get("required", {}), **inputs.get("optional", {})}.items():
            options = spec[1] if len(spec) > 1 else {}
            is_widget = isinstance(spec[0], (list, tuple)) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")
            if is_widget and not options.get("tooltip"):
                missing.append(f"{key}.{name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("layout", ["v1.ckpt", "v1.plain.ckpt", "v1.safetensors", "v2.ckpt", "v2.safetensors",
                                    "v2.nope.safetensors", "v3.ckpt", "v3.plain.ckpt", "v3.safetensors"])
def test_every_official_layout_loads_and_samples(host, test_nodes, motion_files, layout):
    latent = sampled(host, test_nodes, txt2vid(motion_files[layout], frames=FRAMES, groupnorm="auto (v1 only)"))
    assert latent.shape == (FRAMES, 4, 8, 8) and torch.isfinite(latent).all()


def test_loader_detects_the_version(host, motion_files):
    for version in ("v1", "v2", "v3"):
        loaded = node("Pix2Gif_LoadMotionModel").load(motion_files[f"{version}.ckpt"], "auto")[0]
        assert loaded.modules.config.version == version


@pytest.mark.parametrize("sampler", ["gif", "ksampler"])
def test_zero_proj_out_leaves_the_model_output_unchanged(host, test_nodes, motion_files, sampler):
    plain = sampled(host, test_nodes, txt2vid(None, frames=FRAMES, sampler=sampler))
    patched = sampled(host, test_nodes, txt2vid(motion_files["v3.zero"], frames=FRAMES, sampler=sampler))
    assert torch.equal(plain, patched)


def test_motion_module_changes_the_output(host, test_nodes, motion_files):
    plain = sampled(host, test_nodes, txt2vid(None, frames=FRAMES))
    patched = sampled(host, test_nodes, txt2vid(motion_files["v2.safetensors"], frames=FRAMES))
    assert not torch.allclose(plain, patched)


def test_gif_sampler_equals_ksampler_on_the_same_seed(host, test_nodes, motion_files):
    gif = sampled(host, test_nodes, txt2vid(motion_files["v2.ckpt"], frames=FRAMES, sampler="gif", seed=7))
    ksampler = sampled(host, test_nodes, txt2vid(motion_files["v2.ckpt"], frames=FRAMES, sampler="ksampler", seed=7))
    assert torch.equal(gif, ksampler)


class UNetCall:
    """One CFG-batched UNet call the way ComfyUI's samplers make it: [cond video | uncond video]."""

    def __init__(self, model):
        import comfy.model_management

        self.model = model
        comfy.model_management.load_models_gpu([model])
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(2 * FRAMES, 4, 8, 8, generator=generator)
        self.context = torch.randn(2 * FRAMES, 77, 64, generator=generator)
        self.sigma = torch.full((2 * FRAMES,), 3.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        args = {"input": x, "timestep": self.sigma, "cond_or_uncond": [0, 1],
                "c": {"c_crossattn": self.context, "transformer_options": {"cond_or_uncond": [0, 1]}}}
        wrapper = self.model.model_options.get("model_function_wrapper")
        with torch.no_grad():
            if wrapper is None:
                return self.model.model.apply_model(x, self.sigma, **args["c"])
            return wrapper(self.model.model.apply_model, args)


def changed_frames(call: UNetCall, frame: int) -> list[int]:
    base = call(call.x)
    x = call.x.clone()
    x[frame] += 1.0
    return [i for i in range(2 * FRAMES) if not torch.equal(base[i], call(x)[i])]


def test_frames_are_independent_without_and_mixed_with_motion_modules(host, test_nodes, motion_files):
    import comfy.model_management

    base = test_nodes.build_model(0)
    try:
        assert changed_frames(UNetCall(base), 3) == [3]
        motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v2.ckpt"], "auto")[0]
        patched = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "keep model's", "per-frame")[0]
        changed = changed_frames(UNetCall(patched), 3)
        assert changed == list(range(FRAMES)), "a cond frame must reach every cond frame and no uncond frame"
        changed = changed_frames(UNetCall(patched), FRAMES + 5)
        assert changed == list(range(FRAMES, 2 * FRAMES)), "the uncond video must not reach the cond video"
    finally:
        comfy.model_management.unload_all_models()


def test_v1_gets_cross_frame_groupnorm(host, test_nodes, motion_files):
    base = test_nodes.build_model(0)
    motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v1.ckpt"], "auto")[0]
    auto = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "keep model's", "auto (v1 only)")[0]
    per_frame = node("Pix2Gif_ApplyMotionModel").apply(base, motion, 1.0, "keep model's", "per-frame")[0]
    assert cross_frame_norms_while_loaded(auto) == 2 * 22 + 1  # 22 ResBlocks in SD1.5's topology + output norm
    assert cross_frame_norms_while_loaded(per_frame) == 0


def cross_frame_norms_while_loaded(model) -> int:
    """How many cross-frame GroupNorms the UNet holds once ComfyUI has loaded ``model`` for sampling."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    try:
        return sum(type(layer).__name__ == "CrossFrameGroupNorm" for layer in model.model.diffusion_model.modules())
    finally:
        comfy.model_management.unload_all_models()


def test_beta_schedule_is_selectable(host, test_nodes, motion_files, pack):
    from_core = pack.pix2gif_core.diffusion.noise_schedule
    base = test_nodes.build_model(0)
    motion = node("Pix2Gif_LoadMotionModel").load(motion_files["v3.ckpt"], "auto")[0]
    apply = node("Pix2Gif_ApplyMotionModel").apply
    animatediff = apply(base, motion, 1.0, "sqrt_linear (AnimateDiff)", "per-frame")[0]
    expected = from_core.sigmas_from_betas(from_core.betas("sqrt_linear")).float()
    assert torch.allclose(animatediff.object_patches["model_sampling"].sigmas, expected)
    kept = apply(base, motion, 1.0, "keep model's", "per-frame")[0]
    assert "model_sampling" not in kept.object_patches


def test_more_frames_than_the_position_encoding_allows(host, motion_files):
    result = host.run(txt2vid(motion_files["v1.ckpt"], frames=25, groupnorm="per-frame"))
    message = failure_message(result)
    assert "24" in message and "frames" in message


def test_single_frame_latent_is_refused(host, motion_files):
    message = failure_message(host.run(txt2vid(motion_files["v2.ckpt"], frames=1, sampler="ksampler")))
    assert "1 frame" in message and "Apply Motion Model" in message


def test_sdxl_topology_with_sd15_module(host, motion_files):
    message = failure_message(host.run(txt2vid(motion_files["v2.ckpt"], topology="sdxl")))
    assert "SD1.5" in message and "Apply Motion Model" in message


@pytest.mark.parametrize("layout,expected", [("sdxl", "SDXL"), ("code", "code")])
def test_unusable_files_are_refused_by_name(host, motion_files, layout, expected):
    message = failure_message(host.run(txt2vid(motion_files[layout])))
    assert motion_files[layout] in message and expected in message and "Load Motion Model" in message


def test_empty_model_folder_says_where_to_put_files(host, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "animatediff_models", ([str(tmp_path)], {".ckpt"}))
    if hasattr(folder_paths, "filename_list_cache"):
        monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    message = failure_message(host.run(txt2vid("mm_sd_v15_v2.ckpt")))
    assert "no motion model found" in message and str(tmp_path) in message
