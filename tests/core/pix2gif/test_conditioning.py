"""Pix2Gif prompt suffix, magnitude parsing, interval context and 3-way CFG."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.pix2gif.conditioning import (
    DEFAULT_IMAGE_CFG,
    DEFAULT_MAGNITUDES,
    DEFAULT_TEXT_CFG,
    add_interval_embedding,
    cfg_batch,
    combine_three_way_cfg,
    motion_prompt,
    number_to_words,
    parse_magnitudes,
)
from pix2gif_core.pix2gif.flownet import IntervalEmbedding

WORDS = {  # inflect.engine().number_to_words for these values
    0: "zero", 2: "two", 4: "four", 6: "six", 8: "eight", 11: "eleven", 13: "thirteen", 16: "sixteen",
    19: "nineteen", 20: "twenty", 21: "twenty-one", 45: "forty-five", 90: "ninety", 100: "one hundred",
    101: "one hundred and one", 110: "one hundred and ten", 342: "three hundred and forty-two",
    999: "nine hundred and ninety-nine", 1000: "one thousand", 1001: "one thousand and one",
    1023: "one thousand and twenty-three",
}


@pytest.mark.parametrize("number, words", sorted(WORDS.items()))
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


def test_number_to_words_covers_the_embedding_range_only() -> None:
    assert len({number_to_words(n) for n in range(1024)}) == 1024
    for bad in (-1, 1024):
        with pytest.raises(Pix2GifInputError, match="motion magnitude"):
            number_to_words(bad)


def test_motion_prompt_matches_the_demo_format() -> None:
    assert motion_prompt("A dog runs", 8) == "A dog runs. The optical flow is eight."
    assert motion_prompt("  A dog runs.  ", 13) == "A dog runs. The optical flow is thirteen."
    with pytest.raises(Pix2GifInputError, match="caption"):
        motion_prompt("   ", 8)


def test_parse_magnitudes() -> None:
    assert parse_magnitudes(DEFAULT_MAGNITUDES) == [2, 4, 6, 8, 11, 13, 16, 19]
    assert parse_magnitudes(" 3 , 0,1023 ") == [3, 0, 1023]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("  ", "empty"), ("2,,4", "not an integer"), ("2, 4.5", "'4.5' is not an integer"),
    ("two", "not an integer"), ("-1", "outside the embedding range"), ("2,1024", "outside the embedding range"),
])
def test_parse_magnitudes_errors_name_the_input(text: str, fragment: str) -> None:
    with pytest.raises(Pix2GifInputError, match="^frame magnitudes: ") as error:
        parse_magnitudes(text, input_name="frame magnitudes")
    assert fragment in str(error.value)


def test_interval_embedding_is_added_to_every_token() -> None:
    text = torch.randn(2, 77, 768, dtype=torch.float64)
    interval = IntervalEmbedding().double()(torch.tensor([4, 17]))
    out = add_interval_embedding(text, interval)
    for b in range(2):
        for token in range(77):
            assert torch.equal(out[b, token], text[b, token] + interval[b, 0])
    shared = add_interval_embedding(text[:1], interval)  # one null context broadcast over the frames
    torch.testing.assert_close(shared[1] - text[0], interval[1].expand(77, 768), rtol=0, atol=1e-12)
    with pytest.raises(Pix2GifInputError, match="text conditioning"):
        add_interval_embedding(torch.zeros(2, 77, 1024), interval)
    with pytest.raises(Pix2GifInputError, match="interval embedding"):
        add_interval_embedding(text, interval[:, 0])


def test_cfg_batch_stacks_the_three_branches() -> None:
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(2, 77, 768, generator=generator)
    null = torch.randn(1, 77, 768, generator=generator)
    interval = torch.randn(2, 1, 768, generator=generator)
    source = torch.randn(2, 4, 32, 32, generator=generator)
    batch = cfg_batch(text, null, interval, source)
    assert batch.context.shape == (6, 77, 768) and batch.source_latent.shape == (6, 4, 32, 32)
    for b in range(2):
        torch.testing.assert_close(batch.context[b], text[b] + interval[b], rtol=0, atol=0)
        torch.testing.assert_close(batch.context[2 + b], null[0] + interval[b], rtol=0, atol=0)
        torch.testing.assert_close(batch.context[4 + b], null[0] + interval[b], rtol=0, atol=0)
    assert torch.equal(batch.source_latent[:4], torch.cat([source, source]))
    assert not batch.source_latent[4:].any()
    with pytest.raises(Pix2GifInputError, match="one magnitude per frame"):
        cfg_batch(text, null, interval[:1], source)
    with pytest.raises(Pix2GifInputError, match="256×256"):
        cfg_batch(text, null, interval, torch.zeros(2, 4, 64, 64))


def test_three_way_cfg_equals_the_formula() -> None:
    generator = torch.Generator().manual_seed(1)
    cond, image, uncond = (torch.randn(3, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    for text_scale, image_scale in ((7.5, 1.8), (1.0, 1.0), (0.0, 0.0), (3.0, 2.0)):
        # the same combination regrouped per branch
        expected = (1 - image_scale) * uncond + (image_scale - text_scale) * image + text_scale * cond
        got = combine_three_way_cfg(cond, image, uncond, text_scale, image_scale)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert (DEFAULT_TEXT_CFG, DEFAULT_IMAGE_CFG) == (7.5, 1.8)
    torch.testing.assert_close(combine_three_way_cfg(cond, image, uncond),
                               (1 - 1.8) * uncond + (1.8 - 7.5) * image + 7.5 * cond, rtol=0, atol=1e-12)
