"""The engine's default attention kernel against the attention formula (float64), and its batch slicing."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.attention import sdpa_attention, sdpa_in_batch_slices

HEADS = 4


def reference_attention(q, k, v, mask=None):
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return torch.einsum("bhqk,bhkd->bhqd", weights / weights.sum(-1, keepdim=True), v)


def qkv_mask(rows: int = 7, lq: int = 5, lk: int = 6, dim: int = 8):
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(rows, HEADS, lq, dim, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(rows, HEADS, lk, dim, generator=generator, dtype=torch.float64) for _ in range(2))
    return q, k, v, torch.randn(rows, 1, lq, lk, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("masked", [False, True])
def test_default_kernel_is_the_formula(masked: bool) -> None:
    q, k, v, mask = qkv_mask()
    mask = mask if masked else None
    assert (sdpa_attention(q, k, v, mask) - reference_attention(q, k, v, mask)).abs().max() < 1e-12


@pytest.mark.parametrize("mask_rows", [None, 7, 1])
def test_batch_slices_equal_one_call(mask_rows) -> None:
    q, k, v, mask = qkv_mask()
    mask = None if mask_rows is None else mask[:mask_rows]
    # 2·HEADS entries per slice: slices of 2 rows, the last one shorter
    sliced = sdpa_in_batch_slices(q, k, v, mask, max_batch_entries=2 * HEADS)
    assert (sliced - reference_attention(q, k, v, mask)).abs().max() < 1e-12
