"""Follow-Your-Click's metrics through a real ComfyUI host: I-MSE, Temporal Consistency (CLIP) and Text Alignment
(CLIP) executed by the host's own executor on the host's own CLIP / CLIP_VISION objects, compared with independent
references – numpy for I-MSE, `transformers`' CLIPModel (a peer implementation) holding the same tiny random
weights for the CLIP metrics, with its own tokenizer and CLIP's published normalisation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

PARTS_NODE = "MetricsTest_Parts"
CAPTURE_NODE = "MetricsTest_CaptureFloat"
SIDE = 224  # the CLIP input size: frames go in unresized, so the reference needs only CLIP's normalisation
FRAMES = 4
WIDTH = 32  # text width = projection width, as CLIP-L (768 / 768)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
PROMPT = "a dog wags its tail"
CAPTURED: dict[str, float] = {}


def _reference_model(projection_dim: int, seed: int):
    import transformers

    text = dict(vocab_size=49408, hidden_size=WIDTH, intermediate_size=64, num_attention_heads=2,
                num_hidden_layers=2, max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406,
                eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=24, intermediate_size=48, num_attention_heads=2, num_hidden_layers=2, image_size=SIDE,
                  patch_size=32, hidden_act="quick_gelu")
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    # weights larger than HF's 0.02 init, so random frames really differ; rounded to float16, the dtype ComfyUI
    # may store CLIP in (its CPU hosts do), so both sides hold exactly the same weights
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and "norm" not in name:
                parameter.normal_(0.0, 1.0 / parameter.shape[-1] ** 0.5)
            parameter.copy_(parameter.half().float())
    return model, config


def _comfy_vision(model, config, folder):
    import comfy.clip_vision

    vision = config.vision_config.to_dict()
    path = folder / f"vision_{config.projection_dim}.json"
    path.write_text(json.dumps({**{key: vision[key] for key in ("hidden_size", "intermediate_size",
                                                                "num_attention_heads", "num_hidden_layers",
                                                                "image_size", "patch_size", "hidden_act")},
                                "num_channels": 3, "layer_norm_eps": 1e-5, "projection_dim": config.projection_dim,
                                "model_type": "clip_vision_model"}))
    clip_vision = comfy.clip_vision.ClipVisionModel(str(path))
    state = {key: value for key, value in model.state_dict().items()
             if key.startswith(("vision_model.", "visual_projection."))}
    missing, _ = clip_vision.load_sd(state)
    assert not [key for key in missing if "position_ids" not in key], missing
    return clip_vision


def _comfy_clip(model, config, folder, projection: torch.Tensor | None = None, projected_pooled: bool = True):
    """ComfyUI's SD1 CLIP class (CLIP-L's code) at the tiny width, holding the reference's text tower; with
    ``projected_pooled`` False its pooled output is the unprojected one, as Flux's CLIP-L tower gives."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    config_path = folder / "text.json"
    config_path.write_text(json.dumps({**config.text_config.to_dict(), "projection_dim": WIDTH,
                                       "layer_norm_eps": 1e-5}))

    class TextTower(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, **kwargs):
            super().__init__(device=device, dtype=dtype, **{**kwargs, "textmodel_json_config": str(config_path),
                                                            "return_projected_pooled": projected_pooled})

    class TextModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, **kwargs):
            super().__init__(device=device, dtype=dtype, **{**kwargs, "clip_model": TextTower})

    with torch.no_grad():  # ComfyUI 2024-03 fills its text projection in place while building
        clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TextModel))
    state = {key: value for key, value in model.state_dict().items()
             if key.startswith(("text_model.", "text_projection."))}
    if projection is not None:
        state["text_projection.weight"] = projection
    missing, _ = clip.load_sd(state)
    assert not [key for key in missing if "position_ids" not in key and "logit_scale" not in key], missing
    return clip


def _frames(seed: int, count: int = FRAMES, side: int = SIDE) -> torch.Tensor:
    """Frames of 8-bit values (ComfyUI's CLIP preprocessing rounds to 1/255), (count, side, side, 3)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, side, side, 3), generator=generator).float() / 255


@pytest.fixture(scope="module")
def parts(host, tmp_path_factory):
    import nodes

    folder = tmp_path_factory.mktemp("clip_metrics")
    model, config = _reference_model(WIDTH, seed=3)
    narrow_model, narrow_config = _reference_model(16, seed=4)
    changing = _frames(0)
    objects = {
        "clip": {"true": _comfy_clip(model, config, folder),
                 "identity projection": _comfy_clip(model, config, folder, torch.eye(WIDTH)),
                 "zero projection": _comfy_clip(model, config, folder, torch.zeros(WIDTH, WIDTH)),
                 "unprojected": _comfy_clip(model, config, folder, projected_pooled=False)},
        "vision": {"same": _comfy_vision(model, config, folder),
                   "narrow": _comfy_vision(narrow_model, narrow_config, folder)},
        "frames": {"changing": changing, "static": changing[:1].repeat(FRAMES, 1, 1, 1), "one": changing[:1],
                   "empty": changing[:0], "nan": torch.full_like(changing, float("nan"))},
        "image": {"first frame": changing[0:1].clone(), "other": _frames(9, count=1),
                  "smaller": _frames(9, count=1, side=200)},
    }

    class Parts:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {name: (list(options),) for name, options in objects.items()}}

        RETURN_TYPES = ("CLIP", "CLIP_VISION", "IMAGE", "IMAGE")
        FUNCTION = "make"
        CATEGORY = "pix2gif_tests"

        def make(self, clip, vision, frames, image):
            return (objects["clip"][clip], objects["vision"][vision], objects["frames"][frames],
                    objects["image"][image])

    class CaptureFloat:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("FLOAT", {"forceInput": True}), "key": ("STRING", {"default": "x"})}}

        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True
        CATEGORY = "pix2gif_tests"

        def capture(self, value, key):
            CAPTURED[key] = value
            return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(nodes.NODE_CLASS_MAPPINGS, PARTS_NODE, Parts)
        patch.setitem(nodes.NODE_CLASS_MAPPINGS, CAPTURE_NODE, CaptureFloat)
        yield {"model": model, "frames": objects["frames"], "image": objects["image"],
               "vision": objects["vision"]["same"]}


def run_metric(host, node: str, *, clip="true", vision="same", frames="changing", image="first frame",
               text=PROMPT, scale_image_to: int | None = None):
    """Runs ``node`` on the chosen parts; (value, text shown in the node) or the executor's error message."""
    graph = {"parts": {"class_type": PARTS_NODE,
                       "inputs": {"clip": clip, "vision": vision, "frames": frames, "image": image}}}
    image_link = ["parts", 3]
    if scale_image_to is not None:
        graph["scaled"] = {"class_type": "ImageScale", "inputs": {"image": image_link, "upscale_method": "bilinear",
                                                                  "width": scale_image_to, "height": SIDE,
                                                                  "crop": "disabled"}}
        image_link = ["scaled", 0]
    inputs = {"Pix2Gif_FirstFrameError": {"images": ["parts", 2], "image": image_link},
              "Pix2Gif_TemporalConsistency": {"clip_vision": ["parts", 1], "images": ["parts", 2]},
              "Pix2Gif_TextAlignment": {"clip": ["parts", 0], "clip_vision": ["parts", 1], "images": ["parts", 2],
                                        "text": text}}[node]
    graph["metric"] = {"class_type": node, "inputs": inputs}
    graph["capture"] = {"class_type": CAPTURE_NODE, "inputs": {"value": ["metric", 0], "key": node}}
    CAPTURED.pop(node, None)
    result = host.run(graph)
    if not result.success:
        return None, (result.error or {}).get("exception_message", str(result.validation_error))
    return CAPTURED[node], result.outputs["metric"]["text"][0]


def _reference_image_embeddings(model, frames: torch.Tensor) -> np.ndarray:
    pixels = (frames.numpy().astype(np.float64) - CLIP_MEAN) / CLIP_STD
    with torch.no_grad():
        pooled = model.vision_model(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).float()).pooler_output
        return model.visual_projection(pooled).double().numpy()


def _reference_text_embedding(model, text: str) -> np.ndarray:
    import comfy.sd1_clip
    import transformers

    folder = f"{comfy.sd1_clip.__file__.rsplit('/', 1)[0]}/sd1_tokenizer"
    tokenizer = transformers.CLIPTokenizer(f"{folder}/vocab.json", f"{folder}/merges.txt")
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model.text_projection(model.text_model(input_ids=ids).pooler_output).double().numpy()[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_i_mse_is_zero_for_a_clip_starting_with_the_image(host, parts):
    value, shown = run_metric(host, "Pix2Gif_FirstFrameError")
    assert value == 0.0 and shown.startswith("I-MSE 0.000000"), shown


def test_i_mse_equals_numpy_for_another_image(host, parts):
    value, shown = run_metric(host, "Pix2Gif_FirstFrameError", image="other")
    first, other = parts["frames"]["changing"][0].numpy(), parts["image"]["other"][0].numpy()
    expected = np.mean((first.astype(np.float64) - other.astype(np.float64)) ** 2)
    assert value == pytest.approx(expected, rel=1e-9) and expected > 0.1
    assert f"{expected:.6f}" in shown and "[0, 1]" in shown


def test_temporal_consistency_of_a_static_clip_is_one(host, parts):
    value, shown = run_metric(host, "Pix2Gif_TemporalConsistency", frames="static")
    assert value == pytest.approx(1.0, abs=1e-6), shown


def test_temporal_consistency_equals_transformers_clip(host, parts):
    value, shown = run_metric(host, "Pix2Gif_TemporalConsistency")
    embeddings = _reference_image_embeddings(parts["model"], parts["frames"]["changing"])
    pairs = [_cosine(embeddings[k], embeddings[k + 1]) for k in range(FRAMES - 1)]
    assert value == pytest.approx(np.mean(pairs), abs=1e-5)
    assert value < 0.99, "random frames look different to the random CLIP"
    assert shown.count(",") == FRAMES - 2  # one similarity per pair of consecutive frames


def test_text_alignment_equals_transformers_clip(host, parts):
    value, shown = run_metric(host, "Pix2Gif_TextAlignment")
    images = _reference_image_embeddings(parts["model"], parts["frames"]["changing"])
    text = _reference_text_embedding(parts["model"], PROMPT)
    expected = [_cosine(text, row) for row in images]
    assert value == pytest.approx(np.mean(expected), abs=1e-5)
    assert max(expected) - min(expected) > 1e-3  # the frames' cosines differ: the per-frame values are checked
    assert [float(v) for v in shown.split("per frame: ")[1].split(", ")] == pytest.approx(expected, abs=1e-4)
    other, _ = run_metric(host, "Pix2Gif_TextAlignment", text="a red car drives away")
    assert abs(other - value) > 1e-4  # the prompt matters


def test_frames_are_encoded_in_chunks_of_the_memory_budget_with_the_same_result(host, pack, parts, monkeypatch):
    whole, _ = run_metric(host, "Pix2Gif_TemporalConsistency")
    vision, batches = parts["vision"], []
    encode = vision.encode_image

    def counted(frames, *args, **kwargs):
        batches.append(frames.shape[0])
        return encode(frames, *args, **kwargs)

    monkeypatch.setattr(vision, "encode_image", counted)
    run_metric(host, "Pix2Gif_TemporalConsistency")
    assert batches == [FRAMES]  # 4 tiny frames fit one chunk
    batches.clear()
    frame_bytes = 4.0 * 12 * SIDE * SIDE  # less than one frame's estimate: one frame per chunk
    monkeypatch.setattr(pack.nodes.memory_budget, "CHUNK_BYTES", frame_bytes)
    chunked, _ = run_metric(host, "Pix2Gif_TemporalConsistency")
    assert batches == [1] * FRAMES and chunked == pytest.approx(whole, abs=1e-6)


@pytest.mark.parametrize("node, choices, words", [
    ("Pix2Gif_FirstFrameError", {"scale_image_to": 200}, ["[I-MSE (First Frame vs Image)]", "224×224",
                                                           "200×224", "resize"]),
    ("Pix2Gif_FirstFrameError", {"image": "smaller"}, ["224×224 but the image is 200×200"]),
    ("Pix2Gif_FirstFrameError", {"frames": "empty"}, ["images holds 0 frames"]),
    ("Pix2Gif_FirstFrameError", {"frames": "nan"}, ["images holds NaN"]),
    ("Pix2Gif_TemporalConsistency", {"frames": "one"}, ["[Temporal Consistency (CLIP)]", "1 frame",
                                                         "at least 2"]),
    ("Pix2Gif_TemporalConsistency", {"frames": "empty"}, ["images holds 0 frames"]),
    ("Pix2Gif_TemporalConsistency", {"frames": "nan"}, ["images holds NaN"]),
    ("Pix2Gif_TextAlignment", {"vision": "narrow"}, ["[Text Alignment (CLIP)]", "32 wide", "16 wide",
                                                     "same CLIP family"]),
    ("Pix2Gif_TextAlignment", {"clip": "identity projection"}, ["no text projection", "SD1.5", "Load CLIP"]),
    ("Pix2Gif_TextAlignment", {"clip": "zero projection"}, ["no text projection"]),
    ("Pix2Gif_TextAlignment", {"clip": "unprojected"}, ["unprojected pooled output", "Load CLIP"]),
    ("Pix2Gif_TextAlignment", {"text": "  "}, ["text is empty"]),
    ("Pix2Gif_TextAlignment", {"frames": "nan"}, ["images holds NaN"]),
])
def test_bad_input_is_refused_naming_node_input_and_fix(host, parts, node, choices, words):
    value, message = run_metric(host, node, **choices)
    assert value is None and all(word in message for word in words), message
    assert run_metric(host, node)[0] is not None  # the next run works
