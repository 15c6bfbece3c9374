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
