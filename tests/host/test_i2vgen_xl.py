"""I2VGen-XL through a real ComfyUI host: Load I2VGen-XL Model + I2VGen-XL Conditioning + the stock KSampler on a
tiny random UNet in the diffusers layout, with the host's own CLIPTextEncode, CLIP vision model and VAE."""
from __future__ import annotations

import math

import pytest
import torch

FRAMES, WIDTH, HEIGHT = 3, 48, 32
CLIP_VISION_DIM = 64  # = the tiny test CLIP's text width = the tiny UNet's cross_attention_dim


def prompt(unet="tiny_i2vgen_xl.safetensors", *, conditioning=True, width=WIDTH, height=HEIGHT, frames=FRAMES,
           projection_dim=CLIP_VISION_DIM, image_seed=0, steps=2) -> dict:
    graph = {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": "sd15"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat on a lake", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, static", "clip": ["ckpt", 1]}},
        "vision": {"class_type": "Pix2GifTest_TinyCLIPVision", "inputs": {"projection_dim": projection_dim, "seed": 5}},
        "image": {"class_type": "Pix2GifTest_RandomClip",
                  "inputs": {"frames": 1, "width": 64, "height": 40, "seed": image_seed}},
        "unet": {"class_type": "Pix2Gif_LoadI2VGenXLModel", "inputs": {"unet_name": unet, "weight_dtype": "as stored"}},
        "cond": {"class_type": "Pix2Gif_I2VGenXLConditioning",
                 "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "clip_vision": ["vision", 0],
                            "vae": ["ckpt", 2], "image": ["image", 0], "width": width, "height": height,
                            "frames": frames, "fps": 16}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": frames}},
    }
    positive, negative, latent = ((["cond", 0], ["cond", 1], ["cond", 2]) if conditioning
                                  else (["pos", 0], ["neg", 0], ["empty", 0]))
    graph["sample"] = {"class_type": "KSampler",
                       "inputs": {"model": ["unet", 0], "positive": positive, "negative": negative,
                                  "latent_image": latent, "seed": 1, "steps": steps, "cfg": 9.0,
                                  "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    graph["capture"] = {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["sample", 0], "key": "i2v"}}
    return graph


def _sample(host, test_nodes, executor=None, **kwargs) -> torch.Tensor:
    result = host.run(prompt(**kwargs), executor=executor)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["i2v"]


def test_ksampler_makes_a_clip_from_the_conditioning_node(host, test_nodes, i2vgen_unet_files):
    latent = _sample(host, test_nodes)
    assert latent.shape == (FRAMES, 4, HEIGHT // 8, WIDTH // 8)
    assert latent.isfinite().all() and latent.std() > 0.01
    assert (latent[0] - latent[-1]).abs().max() > 1e-4  # frames differ: a clip, not one image repeated


def test_the_image_reaches_the_model_through_the_latent_and_clip_paths_only(host, test_nodes, i2vgen_unet_files):
    executor = host.make_executor()  # one executor: the unchanged text, CLIP vision and VAE nodes run once

    def changed(unet: str) -> float:
        a = _sample(host, test_nodes, executor, unet=unet, image_seed=0, steps=1)
        b = _sample(host, test_nodes, executor, unet=unet, image_seed=1, steps=1)
        return (a - b).abs().max().item()

    assert changed("tiny_i2vgen_xl.safetensors") > 1e-4
    assert changed("tiny_i2vgen_xl_no_latent.safetensors") > 1e-4  # the CLIP path alone still carries it
    assert changed("tiny_i2vgen_xl_no_image.safetensors") == 0.0  # no latent branch, no CLIP tokens: no image


def test_the_uncond_branch_has_the_negative_text_zero_clip_image_and_the_same_latent(host, test_nodes):
    import nodes

    node = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_I2VGenXLConditioning"]()
    positive = [[torch.ones(1, 77, CLIP_VISION_DIM), {}]]
    negative = [[torch.full((1, 77, CLIP_VISION_DIM), -1.0), {}]]
    image = torch.rand(1, 40, 64, 3, generator=torch.Generator().manual_seed(3))
    vae = nodes.NODE_CLASS_MAPPINGS["Pix2GifTest_TinyCheckpoint"]().load(0)[2]
    vision = test_nodes.build_clip_vision(CLIP_VISION_DIM, seed=5)
    pos, neg, latent = node.encode(positive=positive, negative=negative, clip_vision=vision, vae=vae, image=image,
                                   width=WIDTH, height=HEIGHT, frames=FRAMES, fps=16)
    (pos_text, pos_opts), (neg_text, neg_opts) = pos[0], neg[0]
    assert torch.equal(pos_text, positive[0][0]) and torch.equal(neg_text, negative[0][0])
    assert pos_opts["i2vgen_image_embedding"].abs().max() > 0
    assert torch.equal(neg_opts["i2vgen_image_embedding"], torch.zeros_like(pos_opts["i2vgen_image_embedding"]))
    assert torch.equal(neg_opts["i2vgen_image_latent"], pos_opts["i2vgen_image_latent"])
    assert pos_opts["i2vgen_image_latent"].shape == (1, 4, HEIGHT // 8, WIDTH // 8)
    assert latent["samples"].shape == (FRAMES, 4, HEIGHT // 8, WIDTH // 8)


@pytest.mark.parametrize("weight_dtype, expected", [("as stored", torch.float32), ("bf16", torch.bfloat16)])
def test_the_weights_keep_the_file_dtype_unless_asked(host, i2vgen_unet_files, weight_dtype, expected):
    import nodes

    model = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadI2VGenXLModel"]().load("tiny_i2vgen_xl.safetensors", weight_dtype)[0]
    assert {p.dtype for p in model.model.diffusion_model.parameters()} == {expected}
    assert model.model.get_dtype() == expected


def test_the_model_samples_v_prediction_on_the_zero_snr_cosine_schedule(host, i2vgen_unet_files):
    import nodes

    model = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadI2VGenXLModel"]().load("tiny_i2vgen_xl.safetensors")[0]
    sampling = model.get_model_object("model_sampling") if hasattr(model, "get_model_object") \
        else model.model.model_sampling

    def alpha_bar(t: int) -> float:  # cosine ᾱ, then √ᾱ rescaled so that the last step's is 0
        f = [math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(1001)]
        cumulative, roots = 1.0, []
        for step in range(1000):
            cumulative *= 1 - min(1 - f[step + 1] / f[step], 0.999)
            roots.append(math.sqrt(cumulative))
        first, last = roots[0], roots[-1]
        return ((roots[t] - last) * first / (first - last)) ** 2

    for t in (0, 10, 500, 900, 998):
        assert sampling.sigmas[t].item() == pytest.approx(math.sqrt((1 - alpha_bar(t)) / alpha_bar(t)), rel=1e-4)
    sigma = torch.tensor([2.5])
    x, v = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    expected = x / (sigma ** 2 + 1) - v * sigma / (sigma ** 2 + 1).sqrt()
    assert torch.allclose(sampling.calculate_denoised(sigma, v, x), expected, atol=1e-6)


@pytest.mark.parametrize("change, node, words", [
    ({"conditioning": False}, "KSampler", ["I2VGen-XL Conditioning"]),
    ({"width": 44}, "I2VGen-XL Conditioning", ["width/height", "multiples of 8"]),
    ({"projection_dim": 48}, "I2VGen-XL Conditioning", ["clip_vision", "ViT-H"]),
    ({"unet": "sd15_unet.safetensors"}, "Load I2VGen-XL Model", ["sd15_unet.safetensors", "Stable Diffusion"]),
])
def test_bad_input_is_refused_clearly(host, i2vgen_unet_files, change, node, words):
    result = host.run(prompt(**change))
    assert not result.success
    message = result.error["exception_message"]
    assert all(word in message for word in words), message
    if node != "KSampler":
        assert f"[{node}]" in message


REFINED_WIDTH, REFINED_HEIGHT = 64, 64


def cascade_prompt(denoise: float, gif_sampler: bool = False) -> dict:
    """Base clip → decode → resize (ImageScale, centre crop) → encode → re-sampled at the new size from
    ``denoise`` (0.7 ≈ t 700, SDEdit) with a brief text, the conditioning rebuilt at the new size. KSampler as
    the README says; the GIF Sampler for denoise 0 (KSampler on ComfyUI 2024-03 divides by the denoise)."""
    graph = prompt()
    del graph["capture"]
    graph.update({
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "scale": {"class_type": "ImageScale", "inputs": {"image": ["decode", 0], "upscale_method": "bilinear",
                                                         "width": REFINED_WIDTH, "height": REFINED_HEIGHT,
                                                         "crop": "center"}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["scale", 0], "vae": ["ckpt", 2]}},
        "brief": {"class_type": "CLIPTextEncode", "inputs": {"text": "sharp, detailed", "clip": ["ckpt", 1]}},
        "cond2": {"class_type": "Pix2Gif_I2VGenXLConditioning",
                  "inputs": {"positive": ["brief", 0], "negative": ["neg", 0], "clip_vision": ["vision", 0],
                             "vae": ["ckpt", 2], "image": ["scale", 0], "width": REFINED_WIDTH,
                             "height": REFINED_HEIGHT, "frames": FRAMES, "fps": 16}},
        "refine": {"class_type": "KSampler",
                   "inputs": {"model": ["unet", 0], "positive": ["cond2", 0], "negative": ["cond2", 1],
                              "latent_image": ["encode", 0], "seed": 2, "steps": 2, "cfg": 9.0,
                              "sampler_name": "euler", "scheduler": "normal", "denoise": denoise}},
        "capture_encoded": {"class_type": "Pix2GifTest_CaptureLatent",
                            "inputs": {"samples": ["encode", 0], "key": "encoded"}},
        "capture_refined": {"class_type": "Pix2GifTest_CaptureLatent",
                            "inputs": {"samples": ["refine", 0], "key": "refined"}},
    })
    if denoise == 0.0 or gif_sampler:
        inputs = graph["refine"]["inputs"]
        graph["refine"] = {"class_type": "Pix2Gif_GifSampler", "inputs": {
            **{k: v for k, v in inputs.items() if k != "latent_image"}, "start_latent": inputs["latent_image"],
            "frames": FRAMES, "width": REFINED_WIDTH, "height": REFINED_HEIGHT}}
    return graph


@pytest.mark.parametrize("denoise", [0.0, 0.7])
def test_cascade_refinement_resamples_the_resized_clip(host, test_nodes, i2vgen_unet_files, denoise):
    result = host.run(cascade_prompt(denoise))
    assert result.success, result.error or result.validation_error
    encoded, refined = test_nodes.CAPTURED["encoded"], test_nodes.CAPTURED["refined"]
    assert refined.shape == (FRAMES, 4, REFINED_HEIGHT // 8, REFINED_WIDTH // 8)
    if denoise == 0.0:
        assert torch.equal(refined, encoded)  # the resized clip after the VAE round trip, exactly
    else:
        assert refined.isfinite().all() and (refined - encoded).abs().max() > 1e-3


def test_the_gif_sampler_samples_it_without_a_missing_motion_model_warning(host, test_nodes, i2vgen_unet_files, caplog):
    """I2VGen-XL is a video model itself: no 'Apply Motion Model' is missing."""
    result = host.run(cascade_prompt(0.7, gif_sampler=True))
    assert result.success, result.error or result.validation_error
    assert test_nodes.CAPTURED["refined"].isfinite().all()
    assert "refine" not in result.outputs and not any("no motion model" in r.getMessage() for r in caplog.records)


def test_a_text_encoder_of_another_width_is_named(host, i2vgen_unet_files):
    import nodes

    model = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadI2VGenXLModel"]().load("tiny_i2vgen_xl.safetensors")[0]
    conds = {"i2vgen_image_latent": torch.zeros(FRAMES, 4, 4, 6), "i2vgen_image_embedding": torch.zeros(FRAMES, 64),
             "i2vgen_fps": torch.full((FRAMES,), 16.0), "i2vgen_frames": torch.full((FRAMES,), float(FRAMES))}
    with pytest.raises(ValueError, match="text conditioning is 768 wide.*OpenCLIP ViT-H text encoder \\(64\\)"):
        model.model.diffusion_model(torch.zeros(FRAMES, 4, 4, 6), torch.zeros(FRAMES),
                                    context=torch.zeros(FRAMES, 77, 768), **conds)


def test_more_frames_than_the_device_holds_are_refused_before_computing(host, test_nodes, i2vgen_unet_files,
                                                                          monkeypatch):
    import comfy.model_management

    test_nodes.CAPTURED.pop("i2v", None)
    def one_kib_free(dev=None, torch_free_too=False):
        return (1 << 10, 1 << 10) if torch_free_too else 1 << 10

    monkeypatch.setattr(comfy.model_management, "get_free_memory", one_kib_free)
    result = host.run(prompt())
    assert not result.success and "i2v" not in test_nodes.CAPTURED
    message = result.error["exception_message"]
    assert f"{FRAMES} frames at {WIDTH}×{HEIGHT} need" in message and "I2VGen-XL Conditioning" in message, message


def test_every_attention_of_the_unet_calls_the_host_kernel(host, test_nodes, i2vgen_unet_files, monkeypatch, pack):
    """In a KSampler run every attention layer of the engine's I2VGen-XL UNet (spatial self/cross, temporal, the
    concat branch's) goes through the host's ``optimized_attention`` (the user's --use-*-attention choice), the
    same number of times each, and none calls SDPA itself."""
    import importlib
    import sys
    from collections import Counter

    from attention_spies import watch_core_sdpa
    from comfy.ldm.modules import attention as host_attention

    attention_class = importlib.import_module(f"{pack.__name__}.pix2gif_core.i2vgen_xl.layers").Attention
    unet_class = importlib.import_module(f"{pack.__name__}.pix2gif_core.i2vgen_xl.unet").I2VGenXLUNet
    calls, chosen, unets = Counter(), host_attention.optimized_attention, set()

    def calling_attention():
        frame, attention = sys._getframe(2), None
        while frame is not None:
            owner = frame.f_locals.get("self")
            if attention is None and isinstance(owner, attention_class):
                attention = owner
            if isinstance(owner, unet_class):
                unets.add(owner)
            frame = frame.f_back
        return attention

    def spy(*args, **kwargs):
        calls[calling_attention()] += 1
        return chosen(*args, **kwargs)

    monkeypatch.setattr(host_attention, "optimized_attention", spy)
    core_sdpa_callers = watch_core_sdpa(monkeypatch)
    result = host.run(prompt(steps=1))
    assert result.success, result.error or result.validation_error
    assert len(unets) == 1, "one I2VGen-XL UNet sampled"
    layers = [module for module in unets.pop().modules() if isinstance(module, attention_class)]
    assert None not in calls, "the host kernel was called from outside the UNet's attention layers"
    assert set(calls) == set(layers) and len(set(calls.values())) == 1, calls
    assert core_sdpa_callers == []
