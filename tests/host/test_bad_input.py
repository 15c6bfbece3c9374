"""Bad input through the real host: each case is refused with a message naming the node and the input, nothing is
written, and the next run works. A sweep that grows with every node."""
from __future__ import annotations

import math

import pytest
import torch

from graphs import txt2vid


def pix2gif_nodes() -> dict:
    import nodes

    return {key: cls for key, cls in nodes.NODE_CLASS_MAPPINGS.items() if key.startswith("Pix2Gif_")}


def inputs_of_type(cls, kind: str) -> list[str]:
    inputs = cls.INPUT_TYPES()
    return [name for section in ("required", "optional") for name, spec in inputs.get(section, {}).items()
            if spec[0] == kind]


def refused(pack, cls, **inputs) -> str:
    """The error the node gives for ``inputs`` (checked before it looks at anything else)."""
    with pytest.raises(pack.pix2gif_core.errors.Pix2GifInputError) as refusal:
        getattr(cls(), cls.FUNCTION)(**inputs)
    return str(refusal.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_input_of_every_node_refuses_non_finite_values(host, pack, value):
    checked = 0
    for key, cls in pix2gif_nodes().items():
        for name in inputs_of_type(cls, "FLOAT"):
            assert refused(pack, cls, **{name: value}).startswith(f"[{cls.TITLE}] {name} is ")
            checked += 1
    assert checked >= 20, "the sweep reaches the FLOAT inputs of all nodes"


BAD_TENSORS = {  # input type → (bad value, words the message must hold)
    "IMAGE": [(torch.full((2, 8, 8, 3), math.nan), "NaN"), (torch.rand(2, 8, 8, 1), "3 or 4 channels"),
              (torch.rand(0, 8, 8, 3), "0 frames")],
    "LATENT": [({"samples": torch.full((2, 4, 8, 8), math.inf)}, "NaN or infinite"),
               ({"samples": torch.zeros(2, 16, 8, 8)}, "SD1.5 latent")],
    "MASK": [(torch.full((1, 8, 8), math.nan), "NaN")],
}


@pytest.mark.parametrize("kind", list(BAD_TENSORS))
def test_every_tensor_input_of_every_node_refuses_bad_tensors(host, pack, kind):
    checked = 0
    for key, cls in pix2gif_nodes().items():
        for name in inputs_of_type(cls, kind):
            for value, words in BAD_TENSORS[kind]:
                message = refused(pack, cls, **{name: value})
                assert message.startswith(f"[{cls.TITLE}] {name} ") and words in message, message
                checked += 1
    assert checked >= 2, "the sweep reaches inputs of several nodes"


def test_nan_guidance_in_an_api_prompt_is_refused_and_the_next_run_works(host, motion_files, test_nodes):
    prompt = txt2vid(motion_files["v2.ckpt"], frames=4, steps=1)
    prompt["sample"]["inputs"]["cfg"] = math.nan
    test_nodes.CAPTURED.pop("latent", None)
    result = host.run(prompt)
    assert not result.success
    assert result.error["exception_message"].startswith("[GIF Sampler] cfg is nan")
    assert "latent" not in test_nodes.CAPTURED
    assert host.run(txt2vid(motion_files["v2.ckpt"], frames=4, steps=1)).success


def test_a_forgotten_motion_model_is_said_in_the_log_and_the_node(host, motion_files, caplog):
    result = host.run(txt2vid(None, frames=4, steps=1))
    assert result.success, "a batch of images is a valid use"
    assert "no motion model is applied" in result.outputs["sample"]["text"][0]
    assert any("[GIF Sampler] no motion model is applied" in record.getMessage() for record in caplog.records)
    with_motion = host.run(txt2vid(motion_files["v2.ckpt"], frames=4, steps=1))
    assert with_motion.success and "sample" not in with_motion.outputs


def test_the_clip_config_is_written_only_into_a_private_folder(host, pack, tmp_path):
    """A predictable name in the shared temp folder could be a planted link, or a truncated file left by a full
    disk that breaks every later load: the config goes, whole, into a 0700 folder of this process."""
    import json
    import os
    import stat
    import tempfile

    from pix2gif_core.diffusion.ldm_layout import ClipTextLayout

    loader = pack.nodes.pix2gif_model
    layout = ClipTextLayout(vocab_size=49408, hidden_size=64, num_hidden_layers=2, intermediate_size=256,
                            max_position_embeddings=77)
    path = loader._clip_config_file(layout)
    folder = os.path.dirname(path)
    assert os.path.realpath(folder) != os.path.realpath(tempfile.gettempdir())
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and not os.path.islink(path)
    with open(path) as f:
        assert json.load(f)["hidden_size"] == 64
    assert not [name for name in os.listdir(folder) if name.endswith(".partial")], "no half-written file is left"


@pytest.mark.parametrize("prefix,words", [("", "names no file"), ("animations/.", "names no file"),
                                          ("x" * 300, "bytes"), ("bad\0name", "NUL")])
def test_bad_filename_prefixes_are_refused_and_nothing_is_written(host, motion_files, prefix, words):
    import folder_paths
    from pathlib import Path

    save = {"filename_prefix": prefix, "format": "gif", "fps": 8.0, "loop_count": 0, "pingpong": False,
            "save_output": True, "gif_dither": "none", "webp_quality": 90, "mp4_crf": 19}
    output = Path(folder_paths.get_output_directory())
    before = {p for p in output.rglob("*") if p.is_file()}
    result = host.run(txt2vid(motion_files["v2.ckpt"], frames=2, steps=1, save=save))
    assert not result.success
    message = result.error["exception_message"]
    assert message.startswith("[Save Animation] filename_prefix") and words in message, message
    assert {p for p in output.rglob("*") if p.is_file()} == before


def test_a_pix2gif_model_given_to_apply_motion_model_is_named(host, pack, motion_files, tmp_path):
    import folder_paths
    import workflow

    workflow.write_tiny_pix2gif(tmp_path / "p2g.ckpt")
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path))
    nodes = pix2gif_nodes()
    with torch.inference_mode():
        model = nodes["Pix2Gif_LoadPix2GifModel"]().load("p2g.ckpt", True)[0]
        motion = nodes["Pix2Gif_LoadMotionModel"]().load(motion_files["v2.ckpt"], "auto")[0]
        with pytest.raises(pack.pix2gif_core.errors.Pix2GifInputError) as refusal:
            nodes["Pix2Gif_ApplyMotionModel"]().apply(model, motion, 1.0, "keep model's", "per-frame")
    message = str(refusal.value)
    assert "12 input channels" in message and "Pix2Gif" in message and "SDXL" not in message, message


def test_webp_beyond_its_size_limit_is_refused_before_encoding(host, pack):
    save = pix2gif_nodes()["Pix2Gif_SaveAnimation"]()
    with pytest.raises(pack.pix2gif_core.errors.Pix2GifInputError) as refusal:
        save.save(images=torch.rand(2, 8, 16400, 3), filename_prefix="tests/wide", format="webp", fps=8.0,
                  loop_count=0, pingpong=False, save_output=True, gif_dither="none", webp_quality=90, mp4_crf=19)
    assert "16383" in str(refusal.value) and "apng or mp4" in str(refusal.value)
