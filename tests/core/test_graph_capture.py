"""The motion module and the Motion-Inversion embedding attention are whole graphs for ``torch.compile``
(``fullgraph=True``, zero graph breaks by ``torch._dynamo.explain``) and hand no tensor value to Python during a
forward (each such read is a host↔device sync on a GPU). Compiled output = eager output."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.animatediff.injection import FrameContext, InjectedMotionModule
from pix2gif_core.animatediff.motion_module import MotionModule, TemporalAttentionVariant, TemporalSelfAttention
from pix2gif_core.motion_inversion.embeddings import (ApplyOptions, LayerEmbedding, MotionEmbeddingAttention,
                                                       MotionModuleEmbeddingVariant)
from tests.fixtures.tensor_conversions import TensorConversionCounter

C, FRAMES, VIDEOS, SIDE = 32, 8, 2, 4


def motion_module(key_scale: float) -> MotionModule:
    torch.manual_seed(0)
    module = MotionModule(C, pe_length=24).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter) / parameter.shape[-1] ** 0.5)
    for attention in module.modules():
        if isinstance(attention, TemporalSelfAttention):
            attention.key_scale = key_scale
    return module


def embedding_variant(module: MotionModule, mode: str) -> MotionModuleEmbeddingVariant:
    """Embeddings on the module's second attention, trained at 5 frames on a 3×3 grid: both are resampled."""
    generator = torch.Generator().manual_seed(1)
    layer = LayerEmbedding(torch.randn(1, 5, C, generator=generator), torch.randn(9, 5, C, generator=generator),
                           (3, 3))
    attention = module.temporal_transformer.transformer_blocks[0].attention_blocks[1]
    return MotionModuleEmbeddingVariant({attention: MotionEmbeddingAttention(layer, (SIDE, SIDE),
                                                                             ApplyOptions(mode, 0.8))})


def frames() -> torch.Tensor:
    return torch.randn(VIDEOS * FRAMES, C, SIDE, SIDE, generator=torch.Generator().manual_seed(2))


CASES = [("global", 1.0, None), ("global, key scale 0.6", 0.6, None), ("embeddings", 1.0, "as_trained"),
         ("embeddings, object mode", 0.6, "object")]


def module_and_variant(key_scale: float, mode: str | None) -> tuple[MotionModule, TemporalAttentionVariant | None]:
    module = motion_module(key_scale)
    return module, None if mode is None else embedding_variant(module, mode)


@pytest.mark.parametrize("label, key_scale, mode", CASES, ids=[case[0] for case in CASES])
def test_forward_is_one_graph_without_breaks(label, key_scale, mode) -> None:
    module, variant = module_and_variant(key_scale, mode)
    x = frames()
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(module)(x, FRAMES, variant)
        eager = module(x, FRAMES, variant)
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")(x, FRAMES, variant)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    assert (compiled - eager).abs().max() < 1e-5


@pytest.mark.parametrize("label, key_scale, mode", CASES, ids=[case[0] for case in CASES])
def test_forward_converts_no_tensor_to_python(label, key_scale, mode) -> None:
    module, variant = module_and_variant(key_scale, mode)
    context = FrameContext(FRAMES, {} if variant is None else {"down_blocks.0.motion_modules.0": variant})
    injected = InjectedMotionModule("down_blocks.0.motion_modules.0", module, context, key_scale=key_scale)
    x = frames()
    with torch.no_grad():
        with TensorConversionCounter() as first_call:  # also prepares (resamples, casts) the embeddings
            injected(x)
        with TensorConversionCounter() as later_call:
            injected(x)
    assert first_call.total == 0, dict(first_call.seen)
    assert later_call.total == 0, dict(later_call.seen)


def test_the_counter_sees_a_conversion_in_a_variant() -> None:
    module = motion_module(1.0)

    def syncing_variant(attn, hidden, pe):
        tokens = hidden + pe if float(pe.abs().max()) > 0 else hidden
        return attn.attend(attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens))

    with torch.no_grad(), TensorConversionCounter() as counter:
        module(frames(), FRAMES, syncing_variant)
    assert counter.seen["__float__"] == 2 and counter.seen["aten._local_scalar_dense"] == 2
