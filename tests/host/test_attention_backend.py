"""The host's attention as the engine's kernel: same numbers as PyTorch SDPA (written here from the formula),
with and without an additive mask, and the host function that the user's flags chose is the one called."""
from __future__ import annotations

import importlib
import math

import pytest
import torch


def reference_attention(q, k, v, mask=None):
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.double()
    return (scores.softmax(-1) @ v.double()).to(q.dtype)


def host_attention(pack):
    return importlib.import_module(pack.__name__ + ".nodes.attention_backend").host_attention()


def qkv(seed=0, batch=3, heads=2, lq=5, lk=7, dim=8):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, lq, dim, generator=gen), torch.randn(batch, heads, lk, dim, generator=gen),
            torch.randn(batch, heads, lk, dim, generator=gen))


@pytest.mark.parametrize("masked", [False, True])
def test_host_kernel_matches_the_formula(pack, masked):
    q, k, v = qkv()
    mask = torch.randn(3, 1, 5, 7) if masked else None
    out = host_attention(pack)(q, k, v, mask)
    assert out.shape == q.shape
    torch.testing.assert_close(out, reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_host_kernel_calls_the_function_the_host_chose(pack, monkeypatch):
    from comfy.ldm.modules import attention as host

    calls = []
    chosen = host.optimized_attention

    def spy(*args, **kwargs):
        calls.append(args[3])
        return chosen(*args, **kwargs)

    monkeypatch.setattr(host, "optimized_attention", spy)
    q, k, v = qkv(heads=4)
    host_attention(pack)(q, k, v)
    assert calls == [4]
