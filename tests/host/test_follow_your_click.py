"""Follow-Your-Click with public weights in a real host: Click Mask against transformers' own SAM pipeline, and
Regional Motion on the tiny SD1.5 + motion model.

Tolerance: on ComfyUI ≥ 0.3 every frame starts from frame 0's noise outside the region, so outside latents equal
frame 0's bit for bit; 2024-03 has no outer-sample wrapper, so there the sampler's own latents (other noise, same
predictions) meet frame 0's after the last step within ``ROUNDING_ATOL`` (float rounding of that step).
"""
from __future__ import annotations

import importlib.util

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

_spec = importlib.util.spec_from_file_location("sam_models", Path(__file__).resolve().parent.parent / "fixtures"
                                               / "sam_models.py")
sam_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sam_models)

FRAMES, SIZE, STEPS, SEED = 4, 64, 2, 5
ROUNDING_ATOL = 1e-5
MASK_IMAGE = "fyc_region.png"
OBJECTS_IMAGE = "fyc_objects.png"


@pytest.fixture(scope="module")
def sam_name(host, tmp_path_factory) -> str:
    import folder_paths

    root = tmp_path_factory.mktemp("sams")
    sam_models.write_tiny_sam(root / "tiny_sam")
    folder_paths.add_model_folder_path("sams", str(root))
    return "tiny_sam"


@pytest.fixture(scope="module")
def input_images(host) -> None:
    import folder_paths

    folder = Path(folder_paths.get_input_directory())
    Image.fromarray(sam_models.two_objects_image()).save(folder / OBJECTS_IMAGE)
    region = np.zeros((SIZE, SIZE, 3), np.uint8)
    region[16:40, 24:48] = 255  # latent cells 2..4 × 3..5
    Image.fromarray(region).save(folder / MASK_IMAGE)


def click_prompt(sam_name: str, points: str) -> dict:
    return sam_models.click_mask_prompt(sam_name, OBJECTS_IMAGE, points)


def test_click_mask_is_transformers_sam_mask(host, test_nodes, sam_name, input_images):
    import folder_paths

    result = host.run(click_prompt(sam_name, "[[18, 20, 1], [58, 26, 0]]"))
    assert result.success, result.error or result.validation_error
    mask = test_nodes.CAPTURED["mask"][0, ..., 0]
    folder = Path(folder_paths.get_folder_paths("sams")[-1]) / sam_name
    logits, scores = sam_models.transformers_sam_logits(folder, sam_models.two_objects_image(), [[18, 20], [58, 26]],
                                                        [1, 0])
    assert mask.shape == (48, 80)
    assert torch.equal(mask, (logits[int(scores.argmax())] > 0).float())


def test_click_mask_previews_its_mask_over_the_image(host, test_nodes, sam_name, input_images):
    """The ui image the click picker shows: the photo with the object (the MASK output) tinted blue – its blue
    minus red above the photo's – and everything else darker than the photo, in every channel."""
    import folder_paths

    result = host.run(click_prompt(sam_name, "[[18, 20, 1], [58, 26, 0]]"))
    assert result.success, result.error or result.validation_error
    inside = test_nodes.CAPTURED["mask"][0, ..., 0].numpy() > 0.5
    (preview,) = result.outputs["click"]["images"]
    assert preview["type"] == "temp"
    path = Path(folder_paths.get_temp_directory()) / preview["subfolder"] / preview["filename"]
    shown = np.asarray(Image.open(path).convert("RGB")).astype(int)
    photo = sam_models.two_objects_image().astype(int)
    assert shown.shape == photo.shape and inside.any() and (~inside).any()
    assert ((shown[..., 2] - shown[..., 0]) > (photo[..., 2] - photo[..., 0]))[inside].all()
    assert (shown < photo)[~inside].all()


@pytest.mark.parametrize("points, words", [("[[80, 20, 1]]", "outside the 80×48 image"),
                                           ("[]", "no click on the object")])
def test_bad_clicks_are_refused(host, sam_name, input_images, points, words):
    result = host.run(click_prompt(sam_name, points))
    assert not result.success
    message = result.error["exception_message"]
    assert "[Click Mask] points" in message and words in message


@pytest.mark.parametrize("hyper_bias, words", [(0.0, "covers nothing"), (1.0, "covers the whole image")])
def test_a_mask_of_nothing_or_everything_is_refused(host, sam_name, input_images, hyper_bias, words):
    """A SAM whose mask logits are 0 everywhere (hypernetwork output 0) selects nothing; one whose logits are
    positive everywhere (constant upscaled embedding, positive hypernetwork output) selects every pixel."""
    import folder_paths

    model = sam_models.tiny_sam(0)
    decoder = model.mask_decoder
    with torch.no_grad():
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.zero_()
            mlp.proj_out.bias.fill_(hyper_bias)
        decoder.upscale_conv2.weight.zero_()
        decoder.upscale_conv2.bias.fill_(1.0)
    name = f"tiny_sam_logits_{hyper_bias:g}"
    model.save_pretrained(Path(folder_paths.get_folder_paths("sams")[-1]) / name, safe_serialization=True)
    result = host.run(sam_models.click_mask_prompt(name, OBJECTS_IMAGE, "[[18, 20, 1]]"))
    assert not result.success
    message = result.error["exception_message"]
    assert "[Click Mask] points" in message and words in message and "click" in message


def regional_prompt(motion_file: str, mask: str | float | None, *, options: dict | None = None,
                    animatezero: bool = False) -> dict:
    """Tiny checkpoint → motion model (→ AnimateZero with a generated first frame) (→ Regional Motion with the
    region image, or a solid mask of the given value) → GIF Sampler; the video latent captured as "video"."""
    prompt = {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": "sd15"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a dog wags its tail", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "load_mm": {"class_type": "Pix2Gif_LoadMotionModel", "inputs": {"model_name": motion_file, "version": "auto"}},
        "apply_mm": {"class_type": "Pix2Gif_ApplyMotionModel",
                     "inputs": {"model": ["ckpt", 0], "motion_model": ["load_mm", 0], "motion_scale": 1.0,
                                "beta_schedule": "sqrt_linear (AnimateDiff)", "groupnorm": "per-frame"}},
    }
    model = ["apply_mm", 0]
    if animatezero:
        prompt["first"] = {"class_type": "Pix2Gif_AnimateZeroFirstFrame",
                           "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                                      "width": SIZE, "height": SIZE, "seed": SEED, "steps": STEPS, "cfg": 7.0,
                                      "sampler_name": "euler", "scheduler": "normal",
                                      "beta_schedule": "sqrt_linear (AnimateDiff)"}}
        prompt["az"] = {"class_type": "Pix2Gif_AnimateZero",
                        "inputs": {"model": model, "trajectory": ["first", 1], "pin_first_frame": True,
                                   "kv_sharing": "replace", "kv_blocks": "all", "kv_start_percent": 0.0,
                                   "kv_end_percent": 1.0, "window_attention": True, "window_length": 0,
                                   "window_blocks": "down", "kv_source": "image pass"}}
        prompt["capture_first"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                   "inputs": {"samples": ["first", 0], "key": "first"}}
        model = ["az", 0]
    if mask is not None:
        if isinstance(mask, str):
            prompt["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}}
        else:
            prompt["mask"] = {"class_type": "SolidMask", "inputs": {"value": mask, "width": SIZE, "height": SIZE}}
        prompt["regional"] = {"class_type": "Pix2Gif_RegionalMotion",
                              "inputs": {"model": model, "mask": ["mask", 0], "confinement": "hard", "strength": 1.0,
                                         **(options or {})}}
        model = ["regional", 0]
    prompt["sample"] = {"class_type": "Pix2Gif_GifSampler",
                        "inputs": {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "seed": SEED,
                                   "steps": STEPS, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                                   "denoise": 1.0, "frames": FRAMES, "width": SIZE, "height": SIZE}}
    prompt["capture"] = {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["sample", 0],
                                                                               "key": "video"}}
    return prompt


@pytest.fixture(scope="module")
def motion_file(motion_files) -> str:
    return motion_files["v3.ckpt"]


@pytest.fixture(scope="module")
def executor(host):
    return host.make_executor()


def video(host, test_nodes, prompt, executor) -> torch.Tensor:
    test_nodes.CAPTURED.pop("video", None)
    result = host.run(prompt, executor=executor)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["video"]


def assert_equals_first_frame(frames: torch.Tensor, where: torch.Tensor) -> None:
    """Every frame equals frame 0 at the latent cells ``where`` (bit for bit where the host shares the noise)."""
    exact = importlib.util.find_spec("comfy.patcher_extension") is not None
    for frame in frames[1:]:
        if exact:
            assert torch.equal(frame[:, where], frames[0][:, where])
        else:
            torch.testing.assert_close(frame[:, where], frames[0][:, where], rtol=0, atol=ROUNDING_ATOL)


def outside_cells() -> torch.Tensor:
    inside = torch.zeros(SIZE // 8, SIZE // 8, dtype=torch.bool)
    inside[2:5, 3:6] = True
    return ~inside


@pytest.mark.parametrize("confinement", ["hard", "feathered"])
def test_outside_the_mask_every_frame_is_the_first(host, test_nodes, motion_file, input_images, executor,
                                                   confinement):
    frames = video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, options={"confinement": confinement}),
                   executor)
    assert frames.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    assert_equals_first_frame(frames, outside_cells())
    inside = ~outside_cells()
    assert all((frame[:, inside] - frames[0][:, inside]).abs().max() > 1e-2 for frame in frames[1:]), "inside moves"


def test_mask_of_zeros_or_strength_zero_is_a_still_clip(host, test_nodes, motion_file, input_images, executor):
    everywhere = torch.ones(SIZE // 8, SIZE // 8, dtype=torch.bool)
    assert_equals_first_frame(video(host, test_nodes, regional_prompt(motion_file, 0.0), executor), everywhere)
    still = video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, options={"strength": 0.0}), executor)
    assert_equals_first_frame(still, everywhere)


@pytest.mark.parametrize("animatezero", [False, True])
def test_mask_of_ones_is_the_model_unchanged(host, test_nodes, motion_file, executor, animatezero):
    plain = video(host, test_nodes, regional_prompt(motion_file, None, animatezero=animatezero), executor)
    regional = video(host, test_nodes, regional_prompt(motion_file, 1.0, animatezero=animatezero), executor)
    assert torch.equal(regional, plain)


def test_with_animatezero_the_outside_is_the_image(host, test_nodes, motion_file, input_images, executor):
    frames = video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, animatezero=True), executor)
    first = test_nodes.CAPTURED["first"][0]
    assert torch.equal(frames[0], first), "AnimateZero's pinned first frame is kept"
    assert_equals_first_frame(frames, outside_cells())


def test_mask_of_another_size_is_refused(host, motion_file, executor):
    prompt = regional_prompt(motion_file, 1.0)
    prompt["mask"]["inputs"]["width"] = SIZE * 2
    result = host.run(prompt, executor=executor)
    assert not result.success
    message = result.error["exception_message"]
    assert "[Regional Motion] mask is 128×64 px but the video is 64×64 px" in message


TEXTURE_IMAGE = "fyc_texture.png"


@pytest.fixture(scope="module")
def texture_image(host) -> str:
    import folder_paths

    rng = np.random.default_rng(1)
    noise = torch.from_numpy(rng.random((3, SIZE * 2, SIZE * 2))).float()
    smooth = torch.nn.functional.avg_pool2d(noise[None], 5, 1, 2)[0].permute(1, 2, 0).numpy()
    Image.fromarray((smooth * 255).round().astype(np.uint8)).save(Path(folder_paths.get_input_directory()) /
                                                                  TEXTURE_IMAGE)
    return TEXTURE_IMAGE


def measured_flow(host, clip: dict) -> str:
    """Measure Motion's text for ``clip`` nodes (ending in "clip") with the region mask scaled to the clip."""
    prompt = {**clip,
              "region": {"class_type": "LoadImageMask", "inputs": {"image": MASK_IMAGE, "channel": "red"}},
              "region_image": {"class_type": "MaskToImage", "inputs": {"mask": ["region", 0]}},
              "region_scaled": {"class_type": "ImageScale",
                                "inputs": {"image": ["region_image", 0], "upscale_method": "nearest-exact",
                                           "width": SIZE * 2, "height": SIZE * 2, "crop": "disabled"}},
              "region_mask": {"class_type": "ImageToMask", "inputs": {"image": ["region_scaled", 0],
                                                                      "channel": "red"}},
              "measure": {"class_type": "Pix2Gif_MeasureMotion", "inputs": {"images": ["clip", 0],
                                                                            "mask": ["region_mask", 0]}}}
    result = host.run(prompt)
    assert result.success, result.error or result.validation_error
    return result.outputs["measure"]["text"][0]


def flow_values(text: str) -> tuple[float, float]:
    inside = float(text.split("flow inside the mask ")[1].split(" px")[0])
    outside = float(text.split(", outside ")[1].split(" px")[0])
    return inside, outside


def test_measure_motion_reports_flow_inside_and_outside_the_mask(host, input_images, texture_image):
    image = {"class_type": "LoadImage", "inputs": {"image": texture_image}}
    still = measured_flow(host, {"image": image, "clip": {"class_type": "RepeatImageBatch",
                                                          "inputs": {"image": ["image", 0], "amount": 3}}})
    assert flow_values(still) == (0.0, 0.0)
    moving = measured_flow(host, {"image": image, "clip": {
        "class_type": "Pix2Gif_MotionPreview",
        "inputs": {"image": ["image", 0], "motion": "translate", "magnitude": 12.0, "direction": 0.0, "frames": 4,
                   "edge": "reflect", "center_x": 0.5, "center_y": 0.5, "sway_cycles": 1.0}}})
    inside, outside = flow_values(moving)
    assert abs(inside - 8.0) <= 0.8 and abs(outside - 8.0) <= 0.8, moving  # the whole image moves 4, 8, 12 px


@pytest.mark.parametrize("confinement", ["hard", "soft (motion scale)"])
def test_first_latent_pins_the_first_frame_and_the_outside_to_the_photo(host, test_nodes, motion_file, input_images,
                                                                        executor, confinement):
    """hard: the first frame and the outside become the photo; soft: only the first frame (nothing else pinned)."""
    prompt = regional_prompt(motion_file, MASK_IMAGE, options={"confinement": confinement})
    prompt["photo"] = {"class_type": "LoadImage", "inputs": {"image": MASK_IMAGE}}
    prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["photo", 0], "vae": ["ckpt", 2]}}
    prompt["capture_photo"] = {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["encode", 0],
                                                                                     "key": "photo"}}
    prompt["regional"]["inputs"]["first_latent"] = ["encode", 0]
    frames = video(host, test_nodes, prompt, executor)
    # frame 0's prediction is the photo at every step: the sampler's last step lands on it within float rounding
    torch.testing.assert_close(frames[0], test_nodes.CAPTURED["photo"][0], rtol=0, atol=ROUNDING_ATOL)
    if confinement == "hard":
        assert_equals_first_frame(frames, outside_cells())
    else:
        outside = outside_cells()
        assert all((frame[:, outside] - frames[0][:, outside]).abs().max() > 1e-2 for frame in frames[1:])


SOFT = "soft (motion scale)"


def pack_module(pack, name: str):
    """The pack's ``pix2gif_core.<name>`` module as the host imported it."""
    return importlib.import_module(f"{pack.__name__}.pix2gif_core.{name}")


def test_soft_confinement_with_background_one_is_plain_animatediff(host, test_nodes, motion_file, input_images,
                                                                   executor):
    plain = video(host, test_nodes, regional_prompt(motion_file, None), executor)
    soft = video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, options={"confinement": SOFT,
                                                                                      "background_motion": 1.0}),
                 executor)
    assert torch.equal(soft, plain)
    ones = video(host, test_nodes, regional_prompt(motion_file, 1.0, options={"confinement": SOFT,
                                                                               "background_motion": 0.0}), executor)
    assert torch.equal(ones, plain), "a mask of ones scales every key by exactly 1"
    lowered = video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, options={"confinement": SOFT,
                                                                                         "background_motion": 0.0}),
                    executor)
    assert not torch.allclose(lowered, plain, atol=1e-3), "background 0 changes the clip"


def block_means(mask: torch.Tensor, size: int) -> torch.Tensor:
    """``mask`` ``(S, S)`` averaged over ``size`` × ``size`` blocks of equal area (by hand: sum / count)."""
    cells = mask.shape[0] // size
    return torch.stack([torch.stack([mask[i * cells:(i + 1) * cells, j * cells:(j + 1) * cells].sum() / cells ** 2
                                     for j in range(size)]) for i in range(size)])


def attention_by_hand(attention, hidden: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """A temporal attention written out for layer-normed tokens ``hidden`` ``(N, F, C)``: PE added, Q/K/V
    projections, per head softmax(q·kᵀ·scale_n/√d)·v over frames, to_out; keys of sequence n × ``scales[n]``."""
    tokens = (hidden + attention.pe[:hidden.shape[1]]).double()
    q, k, v = (tokens @ layer.weight.double().T for layer in (attention.to_q, attention.to_k, attention.to_v))
    heads = attention.heads
    d = q.shape[-1] // heads
    split = [t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v)]
    logits = split[0] @ split[1].transpose(-1, -2) / d ** 0.5 * scales.double().view(-1, 1, 1, 1)
    attended = (logits.softmax(-1) @ split[2]).transpose(1, 2).reshape(q.shape)
    out = attended @ attention.to_out[0].weight.double().T + attention.to_out[0].bias.double()
    return out.to(hidden.dtype)


def test_soft_confinement_at_background_zero_turns_the_motion_off_outside_the_mask(host, test_nodes, motion_file,
                                                                                   input_images, pack):
    """Every temporal attention call of the run, against the attention written out with the mask applied by hand:
    fully outside the mask its output is that of the module at motion scale 0 (keys × 0: every frame attends to
    all frames equally), fully inside that of the plain module."""
    temporal_attention = pack_module(pack, "animatediff.motion_module").TemporalSelfAttention
    region = torch.zeros(SIZE, SIZE)
    region[16:40, 24:48] = 1  # the region image of input_images
    calls = []

    def record(module, inputs, output):
        if isinstance(module, temporal_attention):
            calls.append((module, inputs[0].detach().clone(), output.detach().clone()))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        video(host, test_nodes, regional_prompt(motion_file, MASK_IMAGE, options={"confinement": SOFT,
                                                                                   "background_motion": 0.0}),
              host.make_executor())  # a fresh executor: nothing cached, every node runs
    finally:
        handle.remove()
    assert calls, "the motion modules' temporal attentions ran"
    sizes = set()
    for module, hidden, output in calls:
        videos = 2  # cond and uncond, each (h·w) sequences, video-major
        side = int(round((hidden.shape[0] / videos) ** 0.5))
        sizes.add(side)
        per_position = block_means(region, side).flatten()
        scales = per_position.repeat(videos)
        torch.testing.assert_close(output, attention_by_hand(module, hidden, scales), rtol=1e-4, atol=1e-5)
        outside, inside = scales == 0, scales == 1
        motion_off = attention_by_hand(module, hidden, torch.zeros_like(scales))
        plain = attention_by_hand(module, hidden, torch.ones_like(scales))
        torch.testing.assert_close(output[outside], motion_off[outside], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(output[inside], plain[inside], rtol=1e-4, atol=1e-5)
        if side == SIZE // 8:
            assert outside.any() and inside.any()
            assert (motion_off[inside] - plain[inside]).abs().max() > 1e-4, "the reference tells the two apart"
    assert SIZE // 8 in sizes and len(sizes) > 1, sizes


def test_soft_confinement_composes_with_animatezero_and_motion_embeddings(host, test_nodes, motion_file,
                                                                           input_images, executor, pack, tmp_path):
    """On one MODEL: motion embeddings → AnimateZero (pinning, K/V sharing, window attention) → Regional Motion
    soft. Background 1 = that chain bit for bit; at background 0 the per-position key scales reach the window
    and the embedding attentions (whose handling of them tests/core checks) and change the clip; AnimateZero's
    first frame stays the image."""
    from pix2gif_core.motion_inversion.embeddings import save_motion_embeddings

    import workflow

    workflow.use_embeddings_folder(tmp_path)
    save_motion_embeddings(workflow.tiny_motion_embeddings(3, frames=FRAMES), tmp_path / "fyc_soft.safetensors")

    def chain(options: dict | None) -> dict:
        prompt = regional_prompt(motion_file, MASK_IMAGE if options else None, options=options, animatezero=True)
        prompt["load_emb"] = {"class_type": "Pix2Gif_LoadMotionEmbeddings",
                              "inputs": {"embeddings_name": "fyc_soft.safetensors"}}
        prompt["apply_emb"] = {"class_type": "Pix2Gif_ApplyMotionEmbeddings",
                               "inputs": {"model": ["apply_mm", 0], "motion_embeddings": ["load_emb", 0],
                                          "mode": "as_trained", "strength": 1.0, "resolution": "interpolate"}}
        prompt["az"]["inputs"]["model"] = ["apply_emb", 0]
        return prompt

    variants = pack_module(pack, "animatezero.window_attention").PositionCorrectedWindowAttention, \
        pack_module(pack, "motion_inversion.embeddings").MotionModuleEmbeddingVariant
    temporal_attention = pack_module(pack, "animatediff.motion_module").TemporalSelfAttention
    scaled_in = set()

    def record(module, inputs, output):
        if isinstance(module, temporal_attention) and module.key_scale_map is not None and len(inputs) > 1:
            scaled_in.update(type(inputs[1]) for kind in variants if isinstance(inputs[1], kind))

    plain = video(host, test_nodes, chain(None), executor)
    assert not torch.equal(plain, video(host, test_nodes, regional_prompt(motion_file, None, animatezero=True),
                                        executor)), "the embeddings act"
    unchanged = video(host, test_nodes, chain({"confinement": SOFT, "background_motion": 1.0}), executor)
    assert torch.equal(unchanged, plain)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        lowered = video(host, test_nodes, chain({"confinement": SOFT, "background_motion": 0.0}), executor)
    finally:
        handle.remove()
    assert scaled_in == set(variants)
    assert not torch.allclose(lowered, plain, atol=1e-3)
    assert torch.equal(lowered[0], test_nodes.CAPTURED["first"][0]), "AnimateZero's pinned first frame is kept"


def report_values(text: str) -> tuple[float, float]:
    """(inside, outside) from Regional Motion Report's text."""
    inside = float(text.split("inside the mask ")[1].split(" px")[0])
    outside = float(text.split("), outside ")[1].split(" px")[0])
    return inside, outside


def test_regional_motion_report_measures_a_clip_of_known_motion(host, motion_file, input_images, texture_image):
    """A clip whose motion is known by construction (the texture translated 4, 8, 12 px: 8 px on average against
    frame 0) through Regional Motion Report with Regional Motion's mask and target: the measured flow, the same
    as Measure Motion's, and the proportional strength suggestion."""
    prompt = regional_prompt(motion_file, MASK_IMAGE, options={"strength": 0.5, "target_motion": 4.0})
    for node in ("sample", "capture"):
        del prompt[node]
    clip = {"image": {"class_type": "LoadImage", "inputs": {"image": texture_image}},
            "clip": {"class_type": "Pix2Gif_MotionPreview",
                     "inputs": {"image": ["image", 0], "motion": "translate", "magnitude": 12.0, "direction": 0.0,
                                "frames": 4, "edge": "reflect", "center_x": 0.5, "center_y": 0.5,
                                "sway_cycles": 1.0}}}
    measure_text = measured_flow(host, clip)
    scaled = {"region_image": {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}},
              "region_scaled": {"class_type": "ImageScale",
                                "inputs": {"image": ["region_image", 0], "upscale_method": "nearest-exact",
                                           "width": SIZE * 2, "height": SIZE * 2, "crop": "disabled"}},
              "region_mask": {"class_type": "ImageToMask", "inputs": {"image": ["region_scaled", 0],
                                                                      "channel": "red"}}}
    prompt.update(clip | scaled)
    prompt["regional"]["inputs"]["mask"] = ["region_mask", 0]
    prompt["report"] = {"class_type": "Pix2Gif_RegionalMotionReport",
                        "inputs": {"images": ["clip", 0], "regional": ["regional", 2]}}
    result = host.run(prompt)
    assert result.success, result.error or result.validation_error
    text = result.outputs["report"]["text"][0]
    inside, outside = report_values(text)
    assert abs(inside - 8.0) <= 0.8 and abs(outside - 8.0) <= 0.8, text
    assert (inside, outside) == flow_values(measure_text), (text, measure_text)
    assert f"target 4.00 px: {abs(inside - 4.0) / 4.0:.0%} above" in text
    assert f"try strength {0.5 * 4.0 / inside:.2f} (made at 0.50)" in text


def test_regional_motion_report_on_the_sampled_clip_equals_measure_motion(host, test_nodes, motion_file,
                                                                          input_images, executor):
    prompt = regional_prompt(motion_file, MASK_IMAGE, options={"target_motion": 2.0})
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
    prompt["report"] = {"class_type": "Pix2Gif_RegionalMotionReport",
                        "inputs": {"images": ["decode", 0], "regional": ["regional", 2]}}
    prompt["measure"] = {"class_type": "Pix2Gif_MeasureMotion", "inputs": {"images": ["decode", 0],
                                                                            "mask": ["mask", 0]}}
    result = host.run(prompt, executor=executor)
    assert result.success, result.error or result.validation_error
    text = result.outputs["report"]["text"][0]
    assert report_values(text) == flow_values(result.outputs["measure"]["text"][0]), text
    assert "target 2.00 px" in text
    single = dict(prompt)
    single["one_frame"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["decode", 0], "batch_index": 0,
                                                                      "length": 1}}
    single["report"] = {"class_type": "Pix2Gif_RegionalMotionReport",
                        "inputs": {"images": ["one_frame", 0], "regional": ["regional", 2]}}
    refused = host.run(single, executor=executor)
    assert not refused.success
    assert "[Regional Motion Report] images holds 1 frame" in refused.error["exception_message"]
