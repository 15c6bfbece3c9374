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


# ---------------------------------------------------------------------------------------------------------------
# In a real sampling run: every temporal attention of the motion modules, and every Motion-Inversion embedding
# attention, goes through the host's optimized_attention


def pack_module(pack, name: str):
    return importlib.import_module(f"{pack.__name__}.pix2gif_core.{name}")


def test_every_motion_and_embedding_attention_calls_the_host_kernel(host, pack, test_nodes, motion_files,
                                                                    tmp_path, monkeypatch):
    import sys
    from collections import Counter

    from attention_spies import watch_core_sdpa
    from comfy.ldm.modules import attention as host_attention_module
    from pix2gif_core.motion_inversion.embeddings import save_motion_embeddings

    import workflow
    from graphs import txt2vid

    temporal_attention = pack_module(pack, "animatediff.motion_module").TemporalSelfAttention
    embedding_attention = pack_module(pack, "motion_inversion.embeddings").MotionEmbeddingAttention
    injected = pack_module(pack, "animatediff.injection").InjectedMotionModule

    module_runs, modules = Counter(), {}
    run_module = injected.forward

    def counted_module_run(self, x):
        module_runs[self.name] += 1
        modules[self.name] = self.module
        return run_module(self, x)

    kernel_calls = Counter()  # (temporal attention, called from an embedding attention) → host kernel calls
    chosen, chosen_masked = host_attention_module.optimized_attention, host_attention_module.optimized_attention_masked

    def caller_attention():
        frame, attention, through_embedding = sys._getframe(2), None, False
        while frame is not None:
            owner = frame.f_locals.get("self")
            if attention is None and frame.f_code.co_name == "attend" and isinstance(owner, temporal_attention):
                attention = owner
            through_embedding |= isinstance(owner, embedding_attention)
            frame = frame.f_back
        return attention, through_embedding

    def spy(host_function):
        def call(*args, **kwargs):
            attention, through_embedding = caller_attention()
            if attention is not None:
                kernel_calls[attention, through_embedding] += 1
            return host_function(*args, **kwargs)
        return call

    monkeypatch.setattr(injected, "forward", counted_module_run)
    monkeypatch.setattr(host_attention_module, "optimized_attention", spy(chosen))
    monkeypatch.setattr(host_attention_module, "optimized_attention_masked", spy(chosen_masked))
    core_sdpa_callers = watch_core_sdpa(monkeypatch)

    embeddings = workflow.tiny_motion_embeddings(4, frames=8, version="v2")
    workflow.use_embeddings_folder(tmp_path)
    save_motion_embeddings(embeddings, tmp_path / "kernel_spy.safetensors")
    prompt = txt2vid(motion_files["v2.safetensors"], frames=8, steps=2)
    prompt["load_emb"] = {"class_type": "Pix2Gif_LoadMotionEmbeddings",
                          "inputs": {"embeddings_name": "kernel_spy.safetensors"}}
    prompt["apply_emb"] = {"class_type": "Pix2Gif_ApplyMotionEmbeddings",
                           "inputs": {"model": ["apply_mm", 0], "motion_embeddings": ["load_emb", 0],
                                      "mode": "as_trained", "strength": 1.0, "resolution": "interpolate"}}
    prompt["sample"]["inputs"]["model"] = ["apply_emb", 0]
    result = host.run(prompt)
    assert result.success, result.error or result.validation_error

    assert len(modules) == 4 * 2 + 1 + 4 * 3  # v2: 2 per down block, the mid block, 3 per up block
    assert set(module_runs.values()) == {module_runs["down_blocks.0.motion_modules.0"]} and \
        module_runs["down_blocks.0.motion_modules.0"] >= 2  # each module once per UNet call, ≥ 1 call per step
    expected = Counter()
    for name, module in modules.items():
        for block, attention in enumerate(module.temporal_transformer.transformer_blocks[0].attention_blocks):
            expected[attention, f"{name}.attention_blocks.{block}" in embeddings.layers] = module_runs[name]
    assert sum(through for (_, through) in expected) == len(embeddings.layers) > 0
    assert kernel_calls == expected
    assert core_sdpa_callers == []
