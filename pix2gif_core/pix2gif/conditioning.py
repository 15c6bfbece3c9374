"""Pix2Gif conditioning (methods.md §2.2, §2.6): prompt suffix, magnitude list, interval context, 3-way CFG.

Each GIF frame is an independent edit of the source image with its own motion magnitude m (an integer). The
context for the UNet and the FlowNet is CLIP(text) + E(m), with E(m) added to all 77 tokens, in every CFG branch.
The model was trained on magnitudes 2–20 (Lucas–Kanade pixels at 256×256); the embedding accepts 0–1023, but
values outside the trained range are extrapolation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import Pix2GifInputError
from .flownet import CONTEXT_DIM, CONTEXT_TOKENS, INTERVAL_VOCABULARY, require_pix2gif_latent

DEFAULT_MAGNITUDES = "2,4,6,8,11,13,16,19"
TRAINED_MAGNITUDE_RANGE = (2, 20)
DEFAULT_TEXT_CFG = 7.5
DEFAULT_IMAGE_CFG = 1.8
NULL_PROMPT = ""
"""The text of the two image-only/unconditional branches (the interval embedding is still added)."""

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
         " seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_INTEGER = re.compile(r"[+-]?\d+")


def number_to_words(number: int) -> str:
    """0..1023 in words, in the style of inflect's ``number_to_words`` (8 → "eight", 21 → "twenty-one",
    105 → "one hundred and five", 1001 → "one thousand and one", 1023 → "one thousand and twenty-three")."""
    if not 0 <= number < INTERVAL_VOCABULARY:
        raise Pix2GifInputError(f"motion magnitude: {number} is outside 0..{INTERVAL_VOCABULARY - 1}.")
    if number < 1000:
        return _below_thousand(number)
    rest = number - 1000  # at most 23 here
    return f"one thousand and {_below_hundred(rest)}" if rest else "one thousand"


def _below_thousand(number: int) -> str:
    hundreds, rest = divmod(number, 100)
    if not hundreds:
        return _below_hundred(rest)
    head = f"{_ONES[hundreds]} hundred"
    return f"{head} and {_below_hundred(rest)}" if rest else head


def _below_hundred(number: int) -> str:
    if number < 20:
        return _ONES[number]
    tens, units = divmod(number, 10)
    return f"{_TENS[tens]}-{_ONES[units]}" if units else _TENS[tens]


def motion_prompt(caption: str, magnitude: int) -> str:
    """``"<caption>. The optical flow is <m in words>."`` exactly as the official demo builds it (a full stop is
    appended to the caption unless it already ends with one)."""
    caption = caption.strip()
    if not caption:
        raise Pix2GifInputError("caption: empty; Pix2Gif needs a description of the scene and its motion.")
    if not caption.endswith("."):
        caption += "."
    return f"{caption} The optical flow is {number_to_words(magnitude)}."


def parse_magnitudes(text: str, input_name: str = "motion magnitudes") -> list[int]:
    """``"2,4,6,8"`` → [2, 4, 6, 8]: comma-separated integers in 0..1023, one GIF frame each (trained: 2–20)."""
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip():
        raise Pix2GifInputError(f"{input_name}: empty; give comma-separated integers such as {DEFAULT_MAGNITUDES!r}.")
    bad = [entry for entry in entries if not _INTEGER.fullmatch(entry)]
    if bad:
        raise Pix2GifInputError(
            f"{input_name}: {', '.join(repr(b) for b in bad)} is not an integer; give comma-separated whole numbers"
            f" such as {DEFAULT_MAGNITUDES!r}."
        )
    values = [int(entry) for entry in entries]
    outside = [v for v in values if not 0 <= v < INTERVAL_VOCABULARY]
    if outside:
        low, high = TRAINED_MAGNITUDE_RANGE
        raise Pix2GifInputError(
            f"{input_name}: {outside} outside the embedding range 0..{INTERVAL_VOCABULARY - 1}"
            f" (the model was trained on {low}–{high})."
        )
    return values


def add_interval_embedding(text_context: torch.Tensor, interval: torch.Tensor) -> torch.Tensor:
    """CLIP context (1|B, 77, 768) + interval embedding (B, 1, 768) broadcast over all 77 tokens → (B, 77, 768)."""
    if text_context.dim() != 3 or text_context.shape[1:] != (CONTEXT_TOKENS, CONTEXT_DIM):
        raise Pix2GifInputError(
            f"text conditioning: expected (B, {CONTEXT_TOKENS}, {CONTEXT_DIM}) from the SD1.5 CLIP-L encoder, got"
            f" {tuple(text_context.shape)}."
        )
    if interval.dim() != 3 or interval.shape[1:] != (1, CONTEXT_DIM) or text_context.shape[0] not in (1, interval.shape[0]):
        raise Pix2GifInputError(
            f"interval embedding: expected ({text_context.shape[0]}, 1, {CONTEXT_DIM}), got {tuple(interval.shape)}."
        )
    return text_context + interval.to(text_context)


@dataclass(frozen=True)
class CfgBatch:
    """Inputs of the three CFG branches stacked as [text+image | image only | unconditional], each B rows.

    ``context``: (3B, 77, 768) for the UNet cross-attention and the FlowNet; ``source_latent``: (3B, 4, 32, 32)
    unscaled (zeros in the unconditional rows) to feed :func:`~pix2gif_core.pix2gif.flownet.motion_guided_concat`.
    """

    context: torch.Tensor
    source_latent: torch.Tensor


def cfg_batch(text_context: torch.Tensor, null_context: torch.Tensor, interval: torch.Tensor,
              source_latent: torch.Tensor) -> CfgBatch:
    """Stack the 3 branches: (text + E(m), src), (null + E(m), src), (null + E(m), zeros).

    ``text_context`` (1|B, 77, 768) = CLIP(motion prompt); ``null_context`` (1|B, 77, 768) = CLIP("");
    ``interval`` (B, 1, 768) = E(m); ``source_latent`` (B, 4, 32, 32) unscaled VAE mode.
    """
    require_pix2gif_latent(source_latent, "source latent")
    if interval.shape[0] != source_latent.shape[0]:
        raise Pix2GifInputError(
            f"interval embedding: {interval.shape[0]} magnitudes for {source_latent.shape[0]} source latents;"
            " give one magnitude per frame."
        )
    conditional = add_interval_embedding(text_context, interval)
    image_only = add_interval_embedding(null_context, interval)
    context = torch.cat([conditional, image_only, image_only])
    source = torch.cat([source_latent, source_latent, torch.zeros_like(source_latent)])
    return CfgBatch(context=context, source_latent=source)


def combine_three_way_cfg(
    eps_conditional: torch.Tensor,
    eps_image_only: torch.Tensor,
    eps_unconditional: torch.Tensor,
    text_scale: float = DEFAULT_TEXT_CFG,
    image_scale: float = DEFAULT_IMAGE_CFG,
) -> torch.Tensor:
    """ε = ε_u + s_T (ε_c − ε_ic) + s_I (ε_ic − ε_u)  (InstructPix2Pix-style 3-way guidance)."""
    return eps_unconditional + text_scale * (eps_conditional - eps_image_only) + image_scale * (eps_image_only - eps_unconditional)
