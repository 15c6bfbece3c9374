"""The faithful Follow-Your-Click model through a real ComfyUI host: Load Follow-Your-Click Model on the tiny SD1.5
MODEL with a tiny checkpoint in the official layout, Follow-Your-Click Conditioning, and the stock KSampler."""
from __future__ import annotations

import math

import pytest
import torch

import workflow

FRAMES, SIZE = 4, 64
LATENT = SIZE // 8
PARTS_NODE = "FollowYourClickTest_Parts"
FILES = {"trained": "tiny_fyc.ckpt", "zero": "tiny_fyc_zero.safetensors", "v2": "tiny_fyc_v2_on_top.safetensors",
         "sd15": "sd15_checkpoint.safetensors", "animatediff": "mm_sd_v15.safetensors",
         "diffusers": "diffusers_sd15_unet.safetensors"}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def base(host, test_nodes):
    """The tiny SD1.5 MODEL, its UNet weights (LDM names) and the host's diffusers → LDM name map."""
    import comfy.utils

    model = test_nodes.build_model(0)
    names = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
    return model, model.model.diffusion_model.state_dict(), names


@pytest.fixture(scope="module")
def files(host, base, tmp_path_factory, monkeypatch_module) -> dict[str, dict]:
    """Every file of FILES in a registered models/follow_your_click folder; returns the written state dicts."""
    import folder_paths
    import nodes

    fyc = workflow._fixture("follow_your_click_checkpoints")
    motion = workflow._fixture("motion_checkpoints")
    _, unet, names = base
    folder = tmp_path_factory.mktemp("follow_your_click")
    v1 = motion.make_motion_state_dict("v1", seed=3)
    states = {"trained": fyc.make_follow_your_click_state_dict(unet, names, v1, seed=4),
              "zero": fyc.make_follow_your_click_state_dict(unet, names, v1, seed=4, trained_scalars=False),
              "v2": fyc.make_follow_your_click_state_dict(unet, names, motion.make_motion_state_dict("v2", seed=3)),
              "sd15": {f"model.diffusion_model.{key}": tensor for key, tensor in unet.items()},
              "animatediff": v1,
              "diffusers": {name: unet[ldm] for name, ldm in names.items() if ldm in unet}}
    fyc.write_ckpt(folder / FILES["trained"], states["trained"])
    for kind in ("zero", "v2", "sd15", "animatediff", "diffusers"):
        fyc.write_safetensors(folder / FILES[kind], states[kind])
    folder_paths.add_model_folder_path("follow_your_click", str(folder))

    class Parts:
        """A photo of two flat halves and a mask of its left third (or of another size, or empty)."""

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"mask_size": ("INT", {"default": SIZE}), "mask_value": ("FLOAT", {"default": 1.0})}}

        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "make"
        CATEGORY = "pix2gif_tests"

        def make(self, mask_size, mask_value):
            return photo(), region_mask(mask_size, mask_value)

    monkeypatch_module.setitem(nodes.NODE_CLASS_MAPPINGS, PARTS_NODE, Parts)
    return states


def photo() -> torch.Tensor:
    image = torch.zeros(1, SIZE, SIZE, 3)
    image[:, :, : SIZE // 2] = torch.tensor([0.9, 0.4, 0.1])
    image[:, :, SIZE // 2:] = torch.tensor([0.1, 0.3, 0.8])
    return image


def region_mask(size: int = SIZE, value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[:, :, : size // 3] = value
    return mask


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def prompt(ckpt: str = FILES["trained"], *, frames: int = FRAMES, motion_strength: float = 4.0,
           mask_size: int = SIZE, mask_value: float = 1.0, steps: int = 2) -> dict:
    return {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": "sd15"}},
        "fyc": {"class_type": "Pix2Gif_LoadFollowYourClickModel", "inputs": {"model": ["ckpt", 0], "ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "the dog wags its tail", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, static", "clip": ["ckpt", 1]}},
        "parts": {"class_type": PARTS_NODE, "inputs": {"mask_size": mask_size, "mask_value": mask_value}},
        "cond": {"class_type": "Pix2Gif_FollowYourClickConditioning",
                 "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "image": ["parts", 0],
                            "mask": ["parts", 1], "width": SIZE, "height": SIZE, "frames": frames, "fps": 2,
                            "motion_strength": motion_strength, "first_frame_masking": 0.0, "masking_seed": 0}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["fyc", 0], "positive": ["cond", 0], "negative": ["cond", 1],
                              "latent_image": ["cond", 2], "seed": 1, "steps": steps, "cfg": 7.5,
                              "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "capture": {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["sample", 0], "key": "fyc"}},
    }


def sample(host, test_nodes, executor=None, **kwargs) -> torch.Tensor:
    result = host.run(prompt(**kwargs), executor=executor)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["fyc"]


def test_ksampler_makes_a_clip_from_the_conditioning_node(host, test_nodes, files):
    latent = sample(host, test_nodes)
    assert latent.shape == (FRAMES, 4, LATENT, LATENT)
    assert latent.isfinite().all() and latent.std() > 0.01
    assert (latent[0] - latent[-1]).abs().max() > 1e-4, "frames differ: a clip, not one image repeated"


def test_motion_strength_changes_the_clip_only_through_trained_embeddings(host, test_nodes, files):
    executor = host.make_executor()

    def changed(ckpt: str) -> float:
        a = sample(host, test_nodes, executor, ckpt=ckpt, motion_strength=4.0, steps=1)
        b = sample(host, test_nodes, executor, ckpt=ckpt, motion_strength=12.0, steps=1)
        return (a - b).abs().max().item()

    assert changed(FILES["trained"]) > 1e-4
    assert changed(FILES["zero"]) == 0.0  # zero-initialised linear_2: the embedding adds nothing


def test_the_model_carries_the_checkpoint_weights_over_the_base_ones(host, base, files):
    model, unet, names = base
    loaded = node("Pix2Gif_LoadFollowYourClickModel").load(model, FILES["trained"])[0]
    weights = loaded.model.diffusion_model.state_dict()
    state = files["trained"]
    carried = {names[name]: tensor for name, tensor in state.items() if name in names}
    assert weights["input_blocks.0.0.weight"].shape == (unet["input_blocks.0.0.weight"].shape[0], 9, 3, 3)
    assert len(carried) > 20
    for key, tensor in weights.items():
        if key.startswith(("fps_embedding.", "motion_embedding.")):
            assert torch.equal(tensor, state[key]), key
        else:
            assert torch.equal(tensor, carried.get(key, unet[key])), key
    assert loaded.model.model_config.unet_config["in_channels"] == 9
    placement = loaded.model_options["transformer_options"]["pix2gif_motion_model"]
    assert (placement.version, placement.pe_length, len(placement.modules)) == ("v1", 24, 20), "no mid-block module"
    assert model.model.model_config.unet_config["in_channels"] == 4, "the base MODEL is left as it was"


def test_the_model_samples_v_prediction_on_the_zero_snr_linear_schedule(host, base, files):
    model = node("Pix2Gif_LoadFollowYourClickModel").load(base[0], FILES["trained"])[0]
    sampling = model.get_model_object("model_sampling") if hasattr(model, "get_model_object") \
        else model.model.model_sampling
    betas = [0.00085 + (0.012 - 0.00085) * t / 999 for t in range(1000)]  # diffusers "linear": linear in β
    roots, cumulative = [], 1.0
    for beta in betas:
        cumulative *= 1 - beta
        roots.append(math.sqrt(cumulative))
    for t in (0, 10, 500, 900, 998):  # √ᾱ shifted and scaled so that the last one is 0 (Lin et al. Algorithm 1)
        alpha_bar = ((roots[t] - roots[-1]) * roots[0] / (roots[0] - roots[-1])) ** 2
        assert sampling.sigmas[t].item() == pytest.approx(math.sqrt((1 - alpha_bar) / alpha_bar), rel=1e-4)
    sigma = torch.tensor([2.5])
    x, v = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    expected = x / (sigma ** 2 + 1) - v * sigma / (sigma ** 2 + 1).sqrt()
    assert torch.allclose(sampling.calculate_denoised(sigma, v, x), expected, atol=1e-6)


def test_zero_initialised_scalar_embeddings_leave_the_time_embedding_plain(host, base, files):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, LATENT, LATENT, generator=generator)
    timesteps, context = torch.tensor([999.0, 500.0]), torch.randn(2, 77, 64, generator=generator)
    scalars = {"fyc_fps": torch.tensor([2.0, 8.0]), "fyc_motion_strength": torch.tensor([4.0, 20.0])}
    outputs = {}
    for kind in ("zero", "trained"):
        unet = node("Pix2Gif_LoadFollowYourClickModel").load(base[0], FILES[kind])[0].model.diffusion_model
        with torch.no_grad():
            plain = UNetModel.forward(unet, x, timesteps, context=context)  # ComfyUI's UNet, no scalar embeddings
            outputs[kind] = (unet(x, timesteps, context=context, **scalars), plain)
    assert torch.equal(*outputs["zero"])
    assert (outputs["trained"][0] - outputs["trained"][1]).abs().max() > 1e-4


def test_the_unet_reads_the_noisy_latent_mask_and_first_frame_channels(host, base, files):
    """What reaches the UNet equals the table of methods.md §5.3, built here by hand, in both CFG branches."""
    import comfy.sample

    model, _, _ = base
    vae = node("Pix2GifTest_TinyCheckpoint").load(0)[2]
    clip_like = [[torch.zeros(1, 77, 64), {}]]
    positive, negative, latent = node("Pix2Gif_FollowYourClickConditioning").encode(
        clip_like, clip_like, vae, photo(), SIZE, SIZE, FRAMES, 2, 4.0, 0.0, 0, mask=region_mask())
    first = vae.encode(photo()).float()[0] * 0.18215
    expected = torch.zeros(FRAMES, 5, LATENT, LATENT)
    for frame in range(FRAMES):
        for row in range(LATENT):
            for column in range(LATENT):  # the mask's pixel at the cell's nearest-resize source, non-zero → 1
                expected[frame, 0, row, column] = float(region_mask()[0, row * 8, column * 8] > 0)
    expected[0, 1:] = first
    seen = []

    def recorder(apply_model, args):
        seen.append((args["input"].clone(), args["c"]["c_concat"].clone()))
        return previous(apply_model, args)

    fyc = node("Pix2Gif_LoadFollowYourClickModel").load(model, FILES["trained"])[0].clone()
    previous = fyc.model_options["model_function_wrapper"]
    fyc.set_model_unet_function_wrapper(recorder)
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    comfy.sample.sample(fyc, noise, 1, 7.5, "euler", "normal", positive, negative, latent["samples"], denoise=1.0,
                        disable_pbar=True, seed=0)
    x, concat = seen[0]
    assert concat.shape == (x.shape[0], 5, LATENT, LATENT) and x.shape[0] == 2 * FRAMES, "cond and uncond videos"
    assert torch.allclose(concat[:FRAMES], expected, atol=1e-6) and torch.allclose(concat[FRAMES:], expected, atol=1e-6)


@pytest.mark.parametrize("change, words", [
    ({"ckpt": FILES["sd15"]}, ["Load Follow-Your-Click Model", FILES["sd15"], "Stable Diffusion checkpoint",
                               "Load Checkpoint"]),
    ({"ckpt": FILES["animatediff"]}, ["Load Follow-Your-Click Model", FILES["animatediff"], "AnimateDiff motion module",
                                      "Load Motion Model"]),
    ({"ckpt": FILES["diffusers"]}, ["Load Follow-Your-Click Model", FILES["diffusers"], "4 channels"]),
    ({"ckpt": FILES["v2"]}, ["Load Follow-Your-Click Model", FILES["v2"], "v2 motion module", "mid-block"]),
    ({"frames": 25}, ["Follow-Your-Click Conditioning", "frames", "at most 24"]),
    ({"mask_size": 48}, ["Follow-Your-Click Conditioning", "mask is 48×48", "image is 64×64"]),
    ({"mask_value": 0.0}, ["Follow-Your-Click Conditioning", "mask covers nothing"]),
])
def test_bad_input_is_refused_naming_node_input_and_fix(host, test_nodes, files, change, words):
    test_nodes.CAPTURED.pop("fyc", None)
    result = host.run(prompt(**change))
    assert not result.success
    message = result.error["exception_message"]
    assert all(word in message for word in words), message
    assert "fyc" not in test_nodes.CAPTURED, "nothing sampled"


def test_a_latent_of_another_size_is_refused_by_name(host, test_nodes, files):
    graph = prompt()
    graph["empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": FRAMES}}
    graph["sample"]["inputs"]["latent_image"] = ["empty", 0]
    result = host.run(graph)
    assert not result.success
    message = result.error["exception_message"]
    assert "latent_image" in message and "Follow-Your-Click Conditioning" in message, message


def test_ksampler_without_the_conditioning_node_is_refused_by_name(host, test_nodes, files):
    graph = prompt()
    graph["empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": FRAMES}}
    graph["sample"]["inputs"].update(positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0])
    result = host.run(graph)
    assert not result.success and "Follow-Your-Click Conditioning" in result.error["exception_message"]


def test_weight_patches_of_the_base_model_are_kept(host, base, files):
    """A LoRA-like weight patch on the SD1.5 MODEL reaches the Follow-Your-Click UNet (on a weight the file does not
    carry), as Save Checkpoint would bake it; the base model's own weights stay unpatched afterwards, and another
    patched MODEL on the same base, loaded when the plain one is given, lends it nothing."""
    import comfy.model_management

    model, unet, _ = base
    key = "output_blocks.0.0.in_layers.2.weight"  # up_blocks.0: not in the tiny checkpoint's subset
    original = unet[key].clone()
    diff = torch.randn(original.shape, generator=torch.Generator().manual_seed(5))
    patched = model.clone()
    patched.add_patches({f"diffusion_model.{key}": (diff,)}, 0.5)
    loaded = node("Pix2Gif_LoadFollowYourClickModel").load(patched, FILES["trained"])[0]
    assert torch.allclose(loaded.model.diffusion_model.state_dict()[key], original + 0.5 * diff, atol=1e-6)
    comfy.model_management.unload_all_models()
    assert torch.equal(model.model.diffusion_model.state_dict()[key], original)
    comfy.model_management.load_models_gpu([patched])  # another MODEL on the same base, loaded, its patch applied
    plain = node("Pix2Gif_LoadFollowYourClickModel").load(model, FILES["trained"])[0]
    assert torch.equal(plain.model.diffusion_model.state_dict()[key], original), "the unpatched MODEL's weights"
    comfy.model_management.unload_all_models()
