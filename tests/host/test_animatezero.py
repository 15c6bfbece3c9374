"""AnimateZero in a real host: frame 1 pinned to a generated or a real image, options off = AnimateDiff, errors.

Tolerances: a generated first frame is pinned bit-exactly (its video frame 1 retraces the recorded pass);
a real image's latent comes back within ``REAL_IMAGE_ATOL`` (float rounding of the sampler's last step and of
the latent scaling in and out of model space; also the bound for an ancestral video sampler); decoded first
frames agree within ``DECODE_ATOL`` (the VAE decodes a batch of frames vs. one image).
"""
from __future__ import annotations

import functools

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progress import assert_complete_bars, recorded_progress

FRAMES = 6
SIZE = 64
STEPS = 3
SEED = 3
REAL_IMAGE_ATOL = 1e-6  # measured 6e-8 (one float32 ulp) for latents up to 1.0
DECODE_ATOL = 1e-4  # measured 1e-6 (real image) and 6e-6 (generated)
IMAGE_NAME = "animatezero_test.png"
FAILED_PREFIX = "animatezero/failed"
ALL_OFF = {"pin_first_frame": False, "kv_sharing": "off", "window_attention": False}


@pytest.fixture(scope="module")
def motion_file(motion_files) -> str:
    return motion_files["v3.ckpt"]


@pytest.fixture(scope="module")
def input_image(host) -> str:
    """A smooth 64×64 RGB test picture in the host's input folder."""
    import folder_paths

    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    pixels = np.stack([x, y, 0.5 + 0.4 * np.sin(6 * x * y)], axis=-1)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(Path(folder_paths.get_input_directory()) / IMAGE_NAME)
    return IMAGE_NAME


def animatezero_prompt(motion_file: str, *, first: str = "generated", sampler: str = "euler",
                       video_sampler: str | None = None, steps: int = STEPS, video_steps: int | None = None,
                       first_size: int = SIZE, frames: int = FRAMES, options: dict | None = None,
                       save: bool = False, ksampler: bool = False) -> dict:
    """Tiny checkpoint → first frame (generated or inverted image) → AnimateZero → video; captures latents/images.

    ``first``: "generated" or the name of an input image; ``first_size``: the generated first frame's size (the
    video is always ``SIZE``); ``options``: AnimateZero inputs. Captured: "video" and "first" latents,
    "video_frames" and "first_frames" decoded images.
    """
    prompt = {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": "sd15"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat on a lake", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "load_mm": {"class_type": "Pix2Gif_LoadMotionModel", "inputs": {"model_name": motion_file,
                                                                        "version": "auto"}},
        "apply_mm": {"class_type": "Pix2Gif_ApplyMotionModel",
                     "inputs": {"model": ["ckpt", 0], "motion_model": ["load_mm", 0], "motion_scale": 1.0,
                                "beta_schedule": "sqrt_linear (AnimateDiff)", "groupnorm": "per-frame"}},
    }
    if first == "generated":
        prompt["first"] = {"class_type": "Pix2Gif_AnimateZeroFirstFrame",
                           "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                                      "width": first_size, "height": first_size, "seed": SEED, "steps": steps,
                                      "cfg": 7.0, "sampler_name": sampler, "scheduler": "normal",
                                      "beta_schedule": "sqrt_linear (AnimateDiff)"}}
        trajectory, image_latent = ["first", 1], ["first", 0]
    else:
        prompt["image"] = {"class_type": "LoadImage", "inputs": {"image": first}}
        prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": ["ckpt", 2]}}
        prompt["invert"] = {"class_type": "Pix2Gif_AnimateZeroInvert",
                            "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "latent": ["encode", 0],
                                       "steps": steps, "sampler_name": sampler, "scheduler": "normal",
                                       "denoise": 1.0, "cfg": 1.0, "beta_schedule": "sqrt_linear (AnimateDiff)"}}
        trajectory, image_latent = ["invert", 0], ["encode", 0]
    prompt["animatezero"] = {"class_type": "Pix2Gif_AnimateZero",
                             "inputs": {"model": ["apply_mm", 0], "trajectory": trajectory, "pin_first_frame": True,
                                        "kv_sharing": "replace", "kv_blocks": "all", "kv_start_percent": 0.0,
                                        "kv_end_percent": 1.0, "window_attention": True, "window_length": 0,
                                        "window_blocks": "down", "kv_source": "image pass", **(options or {})}}
    prompt.update(video_nodes(["animatezero", 0], sampler=video_sampler or sampler, steps=video_steps or steps,
                              frames=frames, ksampler=ksampler))
    prompt["capture_first"] = {"class_type": "Pix2GifTest_CaptureLatent",
                               "inputs": {"samples": image_latent, "key": "first"}}
    prompt["decode_first"] = {"class_type": "VAEDecode", "inputs": {"samples": image_latent, "vae": ["ckpt", 2]}}
    prompt["capture_first_frames"] = {"class_type": "Pix2GifTest_CaptureImage",
                                      "inputs": {"images": ["decode_first", 0], "key": "first_frames"}}
    if save:
        prompt["save"] = {"class_type": "Pix2Gif_SaveAnimation",
                          "inputs": {"images": ["decode", 0], "filename_prefix": FAILED_PREFIX, "format": "gif",
                                     "fps": 8.0, "loop_count": 0, "pingpong": False, "save_output": True,
                                     "gif_dither": "ordered", "webp_quality": 90, "mp4_crf": 19}}
    return prompt


def video_nodes(model: list, *, sampler: str = "euler", steps: int = STEPS, frames: int = FRAMES,
                ksampler: bool = False) -> dict:
    """Sampler (GIF Sampler, or KSampler on an empty latent) → captured latent "video" and frames."""
    common = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "seed": SEED, "steps": steps,
              "cfg": 7.0, "sampler_name": sampler, "scheduler": "normal", "denoise": 1.0}
    if ksampler:
        nodes = {"empty": {"class_type": "EmptyLatentImage",
                           "inputs": {"width": SIZE, "height": SIZE, "batch_size": frames}},
                 "sample": {"class_type": "KSampler", "inputs": {**common, "latent_image": ["empty", 0]}}}
    else:
        nodes = {"sample": {"class_type": "Pix2Gif_GifSampler",
                            "inputs": {**common, "frames": frames, "width": SIZE, "height": SIZE}}}
    nodes["capture"] = {"class_type": "Pix2GifTest_CaptureLatent", "inputs": {"samples": ["sample", 0],
                                                                               "key": "video"}}
    nodes["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
    nodes["capture_frames"] = {"class_type": "Pix2GifTest_CaptureImage",
                               "inputs": {"images": ["decode", 0], "key": "video_frames"}}
    return nodes


def run(host, test_nodes, prompt, executor=None) -> dict:
    for key in ("video", "first", "video_frames", "first_frames"):
        test_nodes.CAPTURED.pop(key, None)
    result = host.run(prompt, executor=executor)
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED


@pytest.fixture(scope="module")
def cached_executor(host):
    """One executor for the failing prompts: its cache keeps the model loaders between them (and a patched MODEL
    whose last sampling failed midway, which the next sampling must restart cleanly)."""
    return host.make_executor()


def failure(host, prompt, executor) -> str:
    """The error message of a prompt that must fail before it writes anything."""
    import folder_paths

    folder = Path(folder_paths.get_output_directory()) / Path(FAILED_PREFIX).parent
    before = set(folder.iterdir()) if folder.is_dir() else set()
    result = host.run(prompt, executor=executor)
    assert not result.success
    assert (set(folder.iterdir()) if folder.is_dir() else set()) == before, "a failed prompt wrote a file"
    return str(result.validation_error) if result.validation_error is not None else result.error["exception_message"]


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "[AnimateZero" in
                    r.getMessage()]


@pytest.mark.parametrize("sampler", ["euler", "ddim", "dpmpp_2m", "heun"])
def test_generated_first_frame_is_pinned_exactly(host, test_nodes, motion_file, sampler, warnings_logged):
    captured = run(host, test_nodes, animatezero_prompt(motion_file, sampler=sampler))
    video, first = captured["video"], captured["first"]
    assert video.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and first.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert torch.equal(video[0], first[0]), "frame 1 retraces the first-frame pass bit for bit"
    assert not any(torch.allclose(video[i], video[0], atol=1e-2) for i in range(1, FRAMES)), "the rest moves"
    assert warnings_logged() == [], "same seed and a deterministic sampler: frame 1 never leaves the trajectory"
    torch.testing.assert_close(captured["video_frames"][0], captured["first_frames"][0], rtol=0, atol=DECODE_ATOL)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_real_image_first_frame_is_pinned(host, test_nodes, motion_file, input_image, sampler, warnings_logged):
    captured = run(host, test_nodes, animatezero_prompt(motion_file, first=input_image, sampler=sampler))
    video, image = captured["video"], captured["first"]
    torch.testing.assert_close(video[0], image[0], rtol=0, atol=REAL_IMAGE_ATOL)
    assert not torch.allclose(video[1], image[0], atol=1e-2)
    assert warnings_logged() == []
    torch.testing.assert_close(captured["video_frames"][0], captured["first_frames"][0], rtol=0, atol=DECODE_ATOL)


def test_ancestral_video_sampler_warns_and_still_pins_the_end_frame(host, test_nodes, motion_file, warnings_logged):
    captured = run(host, test_nodes, animatezero_prompt(motion_file, sampler="euler",
                                                         video_sampler="euler_ancestral"))
    torch.testing.assert_close(captured["video"][0], captured["first"][0], rtol=0, atol=REAL_IMAGE_ATOL)
    messages = warnings_logged()
    assert len(messages) == 1 and "left the recorded first-frame trajectory" in messages[0]
    assert "ancestral" in messages[0]


def test_all_options_off_is_plain_animatediff(host, test_nodes, motion_file):
    short = {"steps": 2, "frames": 4}
    executor = host.make_executor()  # its cache keeps the nodes upstream of the patch between the runs

    def video(options: dict) -> torch.Tensor:
        return run(host, test_nodes, animatezero_prompt(motion_file, options=options, **short), executor)["video"]

    plain = animatezero_prompt(motion_file, **short)
    plain.update(video_nodes(["apply_mm", 0], **short))
    reference = run(host, test_nodes, plain, executor)["video"]
    assert torch.equal(video(ALL_OFF), reference)
    own = {"kv_source": "video pass"}
    outside_steps = {**ALL_OFF, **own, "kv_sharing": "replace", "kv_start_percent": 0.0, "kv_end_percent": 0.0}
    assert torch.equal(video(outside_steps), reference), "outside its step range K/V sharing is the host's attention"
    for option in ({"pin_first_frame": True}, {"kv_sharing": "replace", **own}, {"kv_sharing": "concat", **own},
                   {"window_attention": True}):
        assert not torch.allclose(video({**ALL_OFF, **option}), reference, atol=1e-4), f"{option} changes the video"


def patched_model(motion_files, test_nodes, version: str = "v3", base=None, **options):
    import nodes

    motion = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadMotionModel"]().load(motion_files[f"{version}.ckpt"], "auto")[0]
    base = base or test_nodes.build_model(0)
    video_model = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_ApplyMotionModel"]().apply(base, motion, 1.0, "keep model's",
                                                                                 "per-frame")[0]
    settings = {"pin_first_frame": False, "kv_sharing": "replace", "kv_blocks": "all", "kv_start_percent": 0.0,
                "kv_end_percent": 1.0, "window_attention": True, "window_length": 0, "window_blocks": "down",
                "kv_source": "video pass", **options}
    return nodes.NODE_CLASS_MAPPINGS["Pix2Gif_AnimateZero"]().patch(video_model, **settings)[0]


SD15_SPATIAL_ATTENTION = {("input", i, 0) for i in (1, 2, 4, 5, 7, 8)} | {("middle", 0, 0)} | {
    ("output", i, 0) for i in range(3, 12)}


@pytest.mark.parametrize("blocks,parts", [("all", ("input", "middle", "output")), ("down", ("input",)),
                                          ("mid+up", ("middle", "output"))])
def test_kv_sharing_patches_every_spatial_self_attention_of_the_chosen_blocks(host, test_nodes, motion_files, blocks,
                                                                               parts):
    model = patched_model(motion_files, test_nodes, kv_blocks=blocks)
    patched = set(model.model_options["transformer_options"]["patches_replace"]["attn1"])
    assert patched == {key for key in SD15_SPATIAL_ATTENTION if key[0] in parts}


@pytest.mark.parametrize("version,blocks,count", [("v3", "down", 8), ("v2", "down+mid", 9), ("v2", "all", 21),
                                                  ("v3", "up", 12)])
def test_window_attention_goes_to_the_chosen_motion_modules(host, test_nodes, motion_files, pack, version, blocks,
                                                            count):
    model = patched_model(motion_files, test_nodes, version, window_blocks=blocks, window_length=4)
    variants = model.model_options["transformer_options"]["pix2gif_temporal_variants"]
    assert len(variants) == count
    assert all(isinstance(v, pack.pix2gif_core.animatezero.window_attention.PositionCorrectedWindowAttention)
               and v.window_length == 4 for v in variants.values())


def test_the_unet_sees_and_returns_the_recorded_first_frame(host, test_nodes, motion_files):
    """Each UNet call of the video gets the recorded latent as frame 1 of every video (cond and uncond) and
    returns the recorded x0 there; the post-CFG hook pins the guided prediction too. Here with the trajectory of
    an inverted latent, whose x0 is the image latent in model space at every level."""
    import nodes

    base = test_nodes.build_model(0)
    positive = nodes.CLIPTextEncode().encode(test_nodes.build_clip(1), "a boat")[0]
    image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    trajectory = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_AnimateZeroInvert"]().invert(
        base, positive, {"samples": image}, 3, "euler", "normal", 1.0, 1.0, "keep model's")[0]
    model = patched_model(motion_files, test_nodes, base=base, pin_first_frame=True, trajectory=trajectory,
                          kv_sharing="off", window_attention=False)
    wrapper = model.model_options["model_function_wrapper"]
    post_cfg = model.model_options["sampler_post_cfg_function"][-1]
    first_rows, other_rows = [0, FRAMES], [i for i in range(2 * FRAMES) if i not in (0, FRAMES)]
    assert len(trajectory.evaluations) == 3
    for evaluation in trajectory.evaluations:
        torch.testing.assert_close(evaluation.denoised, image * 0.18215)  # SD1.5 latent scale
        seen = []

        def unet(x, timestep, **conditioning):
            seen.append(x.clone())
            return -x

        x = torch.randn(2 * FRAMES, 4, 8, 8)
        args = {"input": x, "timestep": torch.full((2 * FRAMES,), evaluation.sigma), "cond_or_uncond": [0, 1],
                "c": {"transformer_options": {"cond_or_uncond": [0, 1]}}}
        out = wrapper(unet, args)
        assert torch.equal(seen[0][first_rows], evaluation.state.expand(2, -1, -1, -1))
        assert torch.equal(seen[0][other_rows], x[other_rows])
        assert torch.equal(out[first_rows], evaluation.denoised.expand(2, -1, -1, -1))
        assert torch.equal(out[other_rows], -x[other_rows])
        guided = post_cfg({"denoised": out[:FRAMES] * 3.0, "sigma": args["timestep"][:FRAMES], "input": x[:FRAMES]})
        assert torch.equal(guided[0], evaluation.denoised[0]) and torch.equal(guided[1:], out[1:FRAMES] * 3.0)


def test_progress_of_both_trajectory_nodes(host, test_nodes, motion_file, input_image):
    prompt = animatezero_prompt(motion_file, first=input_image, steps=4, options=ALL_OFF)
    prompt["first"] = animatezero_prompt(motion_file, steps=4)["first"]
    prompt["capture_generated"] = {"class_type": "Pix2GifTest_CaptureLatent",
                                   "inputs": {"samples": ["first", 0], "key": "generated"}}
    with recorded_progress() as reports:
        run(host, test_nodes, prompt)
    assert_complete_bars(reports, total=4, count=3)  # invert, first frame, video


@pytest.mark.parametrize("prompt_options,overrides,expected", [
    pytest.param({"first_size": 128}, {}, ["AnimateZero", "128×128 px", "64×64 px", "width"], id="size"),
    pytest.param({"video_steps": 2}, {}, ["AnimateZero", "steps", "3 steps"], id="steps"),
    pytest.param({"video_sampler": "dpm_2"}, {}, ["AnimateZero", "sampler"], id="sampler"),
    pytest.param({"first": IMAGE_NAME, "sampler": "dpm_2"}, {},
                 ["AnimateZero Invert Image", "sampler_name 'dpm_2'", "between the noise levels", "euler"],
                 id="inversion sampler"),
    pytest.param({"frames": 1, "ksampler": True}, {}, ["AnimateZero", "1 frame", "frames"], id="one frame"),
    pytest.param({}, {"animatezero": {"window_length": 8}}, ["AnimateZero", "window_length 8", f"{FRAMES} frames"],
                 id="window"),
    pytest.param({}, {"apply_mm": {"beta_schedule": "keep model's"}}, ["AnimateZero", "beta_schedule"],
                 id="schedule"),
    pytest.param({}, {"animatezero": {"trajectory": None}}, ["AnimateZero", "pin_first_frame", "trajectory"],
                 id="no trajectory"),
    pytest.param({}, {"animatezero": {"model": ["ckpt", 0]}}, ["AnimateZero", "motion model", "Apply Motion Model"],
                 id="no motion model"),
    pytest.param({}, {"first": {"model": ["apply_mm", 0]}}, ["AnimateZero First Frame", "motion model"],
                 id="motion model into first frame"),
    pytest.param({"first": IMAGE_NAME}, {"invert": {"model": ["apply_mm", 0]}},
                 ["AnimateZero Invert Image", "motion model"], id="motion model into invert"),
    pytest.param({}, {"animatezero": {"window_blocks": "mid"}}, ["AnimateZero", "window_blocks 'mid'"],
                 id="no window blocks"),
    pytest.param({}, {"animatezero": {"pin_first_frame": False}},
                 ["AnimateZero", "kv_source 'image pass'", "pin_first_frame", "'video pass'"], id="kv source unpinned"),
])
def test_bad_input_is_refused_by_node_and_input(host, motion_file, input_image, cached_executor, prompt_options,
                                                overrides, expected):
    prompt = animatezero_prompt(motion_file, save=True, **prompt_options)
    for node, inputs in overrides.items():
        for name, value in inputs.items():
            if value is None:
                del prompt[node]["inputs"][name]
            else:
                prompt[node]["inputs"][name] = value
    message = failure(host, prompt, cached_executor)
    assert all(part in message for part in expected), message


def spied_attention_calls(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every call of the host's ``optimized_attention`` from now on, as (q, k, v) in the ``(B, L, heads·d)``
    layout whatever layout the caller used (``skip_reshape`` = heads split, ComfyUI ≥ 0.3)."""
    from comfy.ldm.modules import attention as host

    calls, chosen = [], host.optimized_attention

    def spy(q, k, v, heads, *args, **kwargs):
        def merged(t):
            return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1) if kwargs.get("skip_reshape") else t

        calls.append(tuple(merged(t).detach().clone() for t in (q, k, v)))
        return chosen(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(host, "optimized_attention", spy)
    return calls


def attention_calls(calls, window_length: int = 3):
    """Split spied calls into the image pass's spatial self-attention (queries as long as keys, one image per
    branch), the video pass's K/V sharing (every frame's queries against one set of keys/values per video) and
    the window attention (FRAMES queries per sequence against frame 1 once per slot plus the later frames:
    window_length + FRAMES − 1 keys)."""
    image = [(k, v) for q, k, v in calls if q.shape[0] <= 2 and q.shape[1] == k.shape[1] != FRAMES]
    shared = [(k, v) for q, k, v in calls if q.shape[1] == FRAMES * k.shape[1]]
    windows = [q for q, k, v in calls if q.shape[1] == FRAMES and k.shape[1] == window_length + FRAMES - 1]
    return image, shared, windows


@pytest.mark.parametrize("first", ["generated", IMAGE_NAME])
def test_injected_kv_are_those_the_image_pass_computed_bit_for_bit(host, test_nodes, motion_file, input_image,
                                                                   monkeypatch, pack, first):
    """Captured where the host's attention receives them: layer by layer and step by step every video's
    keys/values are those the image pass computed for the branch the image pass evaluated, bit for bit (the
    inversion at cfg 1 evaluates only the positive prompt, so the negative video keeps its own frame 1). With
    kv_source 'video pass' they differ. The window attention's fused path (the accelerator default, forced here
    on the CPU) goes through the host's attention as well."""
    module = pack.nodes.animatezero
    monkeypatch.setattr(module, "PositionCorrectedWindowAttention",
                        functools.partial(module.PositionCorrectedWindowAttention, fused=True))
    calls = spied_attention_calls(monkeypatch)
    run(host, test_nodes, animatezero_prompt(motion_file, first=first, options={"window_length": 3}))
    image, shared, windows = attention_calls(calls)
    layers = len(shared) // STEPS
    assert layers > 0 and len(shared) == STEPS * layers and windows, "K/V sharing and windows use the host's attention"
    blocks = [image[start:start + layers] for start in range(0, len(image), layers)]
    if first == "generated":
        assert len(blocks) == STEPS and all(k.shape[0] == 2 for k, _ in image), "one evaluation per step, CFG batch"
    else:  # inversion: the clean latent (not replayed), steps 2 and 1 on the way up, then the top level
        assert len(blocks) == STEPS + 1
        blocks = [blocks[STEPS]] + blocks[1:STEPS][::-1]
    for step, (recorded_block, shared_block) in enumerate(zip(blocks, (shared[i * layers:(i + 1) * layers] for i in range(STEPS)))):
        for layer, ((image_k, image_v), (video_k, video_v)) in enumerate(zip(recorded_block, shared_block)):
            assert video_k.shape[0] == 2
            for row in range(image_k.shape[0]):
                assert any(torch.equal(video_k[c], image_k[row]) and torch.equal(video_v[c], image_v[row])
                           for c in range(2)), f"step {step}, layer {layer}: injected K/V differ from the image's"
    if first == "generated":
        assert all(torch.equal(vk, ik) and torch.equal(vv, iv) for (ik, iv), (vk, vv) in
                   zip(image, shared)), "both branches injected, in the host's branch order"
    calls.clear()
    run(host, test_nodes, animatezero_prompt(motion_file, first=first, options={"kv_source": "video pass"}))
    own = attention_calls(calls)[1]
    assert len(own) == len(shared)
    assert not all(torch.equal(vk, ok) for (vk, _), (ok, _) in zip(shared, own)), "the source changes the K/V"


class TensorToPython(torch.overrides.TorchFunctionMode):
    """Counts tensor → Python conversions (each one waits for the device): where they happen, as file:line."""

    CONVERSIONS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__", "numpy"}

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.CONVERSIONS:
            import traceback
            caller = next((frame for frame in reversed(traceback.extract_stack()[:-1])
                           if "torch" not in frame.filename), None)
            self.sites.append(f"{func.__name__} at {caller.filename}:{caller.lineno}" if caller else func.__name__)
        return func(*args, **(kwargs or {}))


def host_marks_sampling_runs() -> bool:
    """ComfyUI ≥ 0.3 wraps each sampling run (outer-sample wrappers); 2024-03 has no such hook."""
    import comfy.model_patcher

    return hasattr(comfy.model_patcher.ModelPatcher, "add_wrapper_with_key")


@pytest.mark.parametrize("kv_source", ["image pass", "video pass"])
@pytest.mark.parametrize("options", [{}, {"kv_start_percent": 0.1}], ids=["whole denoising", "K/V from 10 %"])
def test_unet_calls_convert_no_tensor_to_python_after_the_first_evaluations(host, test_nodes, motion_file,
                                                                             monkeypatch, pack, options, kv_source):
    """Counted in every UNet call of the video pass through the host (AnimateZero's wrapper, the replay of the
    recorded first frame and of the image pass's keys/values, pinning, K/V sharing on every spatial
    self-attention, window attention, motion modules, the host's UNet): after the run's first evaluations
    (schedule check, departure check, read replay index) nothing is read from the device – the recorded
    evaluation is found and gathered on the device, and a K/V start/end range is decided there; a host that does
    not mark its sampling runs (2024-03) reads the replay index once per call."""
    # the K/V range as on an accelerator (on the CPU it reads σ once per call, which waits for nothing)
    monkeypatch.setattr(pack.pix2gif_core.animatezero.shared_kv_attention, "READ_ON_HOST", ())
    module, per_call = pack.nodes.animatezero, []
    make_wrapper = module._animatezero_wrapper

    def counting_wrapper(*args):
        wrapper = make_wrapper(*args)

        def counted(apply_model, call_args):
            with TensorToPython() as mode:
                out = wrapper(apply_model, call_args)
            per_call.append(mode.sites)
            return out

        return counted

    monkeypatch.setattr(module, "_animatezero_wrapper", counting_wrapper)
    steps = 5
    run(host, test_nodes, animatezero_prompt(motion_file, steps=steps,
                                             options={"window_length": 3, "kv_source": kv_source, **options}))
    assert len(per_call) == steps, "one UNet call (CFG batch) per step"
    steady_reads = 0 if host_marks_sampling_runs() else 1
    steady = per_call[pack.pix2gif_core.animatezero.trajectory_replay.DEPARTURE_CHECKED_EVALUATIONS:]
    assert steady and all(len(sites) == steady_reads and all("animatezero" in site for site in sites)
                          for sites in steady), per_call
    first = per_call[0]  # the schedule check (once per run: two lists), the index read, the departure check (two)
    assert len(first) <= 5 and all("comfyui-pix2gif" in site for site in first), first


def _first_frame_attention(q, k, v, heads: int, mode: str):
    """Reference, float64: each frame of each ``FRAMES``-frame chunk attends to its chunk's frame 0 (replace) or to
    its own tokens followed by frame 0's (concat); softmax written out per head."""
    def heads_of(t):
        return t.double().reshape(-1, FRAMES, t.shape[1], heads, t.shape[2] // heads)

    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    out = torch.empty_like(q)
    for chunk in range(q.shape[0]):
        for frame in range(FRAMES):
            keys, values = k[chunk, 0], v[chunk, 0]
            if mode == "concat":
                keys, values = torch.cat([k[chunk, frame], keys]), torch.cat([v[chunk, frame], values])
            weights = (torch.einsum("qhd,khd->hqk", q[chunk, frame], keys) / q.shape[-1] ** 0.5).softmax(-1)
            out[chunk, frame] = torch.einsum("hqk,khd->qhd", weights, values)
    return out.reshape(-1, q.shape[2], q.shape[3] * q.shape[4]).float()


@pytest.mark.parametrize("read_on_host", [True, False], ids=["CPU: σ read", "accelerator: on the device"])
@pytest.mark.parametrize("mode", ["replace", "concat"])
def test_kv_step_range(host, pack, monkeypatch, mode, read_on_host):
    """The K/V start/end range as the attention patch applies it: a UNet call at σ_end ≤ σ ≤ σ_start (bounds
    included) attends to frame 1's keys/values (the float64 reference), any other call as the host's own attention
    does (bit for bit; decided on the device, concat attends to its own tokens twice: the same softmax). σ is read
    once per call where reading waits for no device (CPU); on an accelerator (here: the CPU treated as one)
    nothing is read."""
    import comfy.ldm.modules.attention as host_attention

    if not read_on_host:
        monkeypatch.setattr(pack.pix2gif_core.animatezero.shared_kv_attention, "READ_ON_HOST", ())
    torch.manual_seed(0)
    heads = 2
    q, k, v = (torch.randn(2 * FRAMES, 10, 16) for _ in range(3))
    patch = pack.nodes.animatezero._shared_kv_patch(mode, "video pass", (2.0, 8.0))
    own, shared = host_attention.optimized_attention(q, k, v, heads), _first_frame_attention(q, k, v, heads, mode)
    for sigma, inside in [(8.0, True), (5.0, True), (2.0, True), (8.5, False), (1.9, False), (0.0, False)]:
        options = {"n_heads": heads, "cond_or_uncond": [0, 1], "sigmas": torch.full((2,), sigma)}
        with TensorToPython() as conversions:
            out = patch(q, k, v, options)
        assert len(conversions.sites) == read_on_host, conversions.sites
        if inside:
            torch.testing.assert_close(out, shared, rtol=1e-5, atol=1e-5)
        elif mode == "replace" or read_on_host:
            assert torch.equal(out, own), sigma
        else:
            torch.testing.assert_close(out, own, rtol=1e-5, atol=1e-6)


def test_a_call_off_the_recorded_order_after_the_read_steps_fails_the_run(host, motion_file, monkeypatch, pack):
    """With no step read on the host (DEPARTURE_CHECKED_EVALUATIONS 0), a video sampler that evaluates between the
    recorded levels (dpm_fast on an euler trajectory: same schedule, one evaluation per step at σ_max and then
    between the levels) is caught on the device: on a host that marks its sampling runs the run ends (all three
    evaluations), then fails with the error before anything is saved; on 2024-03 every call is read and the second
    evaluation fails."""
    module, calls = pack.nodes.animatezero, []
    monkeypatch.setattr(pack.pix2gif_core.animatezero.trajectory_replay, "DEPARTURE_CHECKED_EVALUATIONS", 0)
    make_wrapper = module._animatezero_wrapper

    def counting_wrapper(*args):
        wrapper = make_wrapper(*args)

        def counted(apply_model, call_args):
            calls.append(float(call_args["timestep"][0]))  # read here, outside the wrapper's own reads
            return wrapper(apply_model, call_args)

        return counted

    monkeypatch.setattr(module, "_animatezero_wrapper", counting_wrapper)
    message = failure(host, animatezero_prompt(motion_file, video_sampler="dpm_fast", save=True),
                      host.make_executor())
    assert "[AnimateZero]" in message and "where the first-frame trajectory expects" in message, message
    assert "sampler" in message
    assert len(calls) == (STEPS if host_marks_sampling_runs() else 2), calls
