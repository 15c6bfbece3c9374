"""AnimateDiff motion module against an independent float64 einsum reference, plus layout and error checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.motion_module import (
    MotionModule,
    MotionModuleConfig,
    MotionModuleSet,
    TemporalSelfAttention,
    global_temporal_attention,
    sinusoidal_position_encoding,
    unet_position,
)

HEADS = 8
T = "temporal_transformer."
BLOCK = T + "transformer_blocks.0."


# ---------------------------------------------------------------- independent reference (float64, einsum)
def reference_position_table(frames: int, channels: int) -> Tensor:
    table = torch.zeros(frames, channels, dtype=torch.float64)
    for position in range(frames):
        for even in range(0, channels, 2):
            table[position, even] = math.sin(position / 10000 ** (even / channels))
            table[position, even + 1] = math.cos(position / 10000 ** (even / channels))
    return table


def reference_linear(x: Tensor, params: dict[str, Tensor], name: str) -> Tensor:
    out = torch.einsum("...i,oi->...o", x, params[name + ".weight"])
    bias = params.get(name + ".bias")
    return out if bias is None else out + bias


def reference_layer_norm(x: Tensor, params: dict[str, Tensor], name: str, eps: float = 1e-5) -> Tensor:
    centred = x - x.mean(-1, keepdim=True)
    variance = (centred * centred).mean(-1, keepdim=True)
    return centred / torch.sqrt(variance + eps) * params[name + ".weight"] + params[name + ".bias"]


def reference_motion_module(params: dict[str, Tensor], x: Tensor, frames: int, key_scale: float = 1.0,
                            position_scales: Tensor | None = None) -> Tensor:
    """GroupNorm → proj_in → 2×(LN, +PE, QKV, per-head softmax over frames at each position, out) → GEGLU FF →
    proj_out → + x, written with explicit sums over the (video, y, x, frame, channel) axes. Keys × ``key_scale``,
    and at position (y, x) of every video also × ``position_scales[y, x]``."""
    batch_frames, channels, height, width = x.shape
    videos, head_dim = batch_frames // frames, channels // HEADS
    groups = x.reshape(batch_frames, 32, -1)
    centred = groups - groups.mean(-1, keepdim=True)
    normed = (centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + 1e-6)).reshape(x.shape)
    normed = normed * params[T + "norm.weight"][:, None, None] + params[T + "norm.bias"][:, None, None]
    hidden = torch.einsum("bfcyx->byxfc", normed.reshape(videos, frames, channels, height, width))
    hidden = reference_linear(hidden, params, T + "proj_in")
    pe = reference_position_table(frames, channels)
    if position_scales is not None:
        key_scale = key_scale * position_scales.double()[None, :, :, None, None, None]  # (b, y, x, f, heads, d)
    for index in range(2):
        attention = f"{BLOCK}attention_blocks.{index}."
        tokens = reference_layer_norm(hidden, params, f"{BLOCK}norms.{index}") + pe
        q, k, v = (
            reference_linear(tokens, params, attention + name).reshape(*tokens.shape[:-1], HEADS, head_dim)
            for name in ("to_q", "to_k", "to_v")
        )
        scores = torch.einsum("byxfnd,byxgnd->byxnfg", q, k * key_scale) / math.sqrt(head_dim)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        attended = torch.einsum("byxnfg,byxgnd->byxfnd", weights, v).reshape(tokens.shape)
        hidden = hidden + reference_linear(attended, params, attention + "to_out.0")
    normed_tokens = reference_layer_norm(hidden, params, BLOCK + "ff_norm")
    projected = reference_linear(normed_tokens, params, BLOCK + "ff.net.0.proj")
    value, gate = projected[..., : 4 * channels], projected[..., 4 * channels :]
    gated = value * 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))  # GELU(gate), exact erf form
    hidden = hidden + reference_linear(gated, params, BLOCK + "ff.net.2")
    out = reference_linear(hidden, params, T + "proj_out")
    return x + torch.einsum("byxfc->bfcyx", out).reshape(x.shape)


# ---------------------------------------------------------------- helpers
def assert_near(actual: Tensor, expected: Tensor, atol: float) -> None:
    """Max absolute difference ≤ ``atol`` (torch.testing.assert_close costs seconds of imports on first use)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    difference = (actual - expected).abs().max().item()
    assert difference <= atol, f"max |difference| {difference:.2e} > {atol:.0e}"


def random_module(channels: int, pe_length: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> MotionModule:
    """Random weights everywhere, norms included (affine ≠ 1/0), proj_out non-zero."""
    torch.manual_seed(seed)
    module = MotionModule(channels, pe_length).to(dtype)
    for attention in module.modules():
        if isinstance(attention, TemporalSelfAttention):
            attention.reset_position_encoding(dtype)  # casting the float32 table would cost float64 precision
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) / math.sqrt(parameter.shape[-1]))
    return module.eval()


def random_frames(videos: int, frames: int, channels: int, height: int, width: int, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.randn(1, channels, 1, 1, generator=generator, dtype=torch.float64)
    return torch.randn(videos * frames, channels, height, width, generator=generator, dtype=torch.float64) + offsets


# ---------------------------------------------------------------- tests
def test_position_encoding_matches_sinusoid_formula() -> None:
    ours = sinusoidal_position_encoding(32, 64, dtype=torch.float64)
    assert_near(ours, reference_position_table(32, 64), 1e-12)


@pytest.mark.parametrize("frames", [16, 7])
def test_motion_module_matches_float64_reference(frames: int) -> None:
    module = random_module(channels=64, pe_length=24)
    x = random_frames(videos=2, frames=frames, channels=64, height=3, width=5)
    with torch.no_grad():
        ours = module(x, video_length=frames)
    expected = reference_motion_module(dict(module.state_dict()), x, frames)
    assert (ours - x).abs().max() > 0.1  # the module does something
    assert_near(ours, expected, 1e-10)


def test_key_scale_multiplies_keys() -> None:
    module = random_module(channels=64, pe_length=32)
    x = random_frames(videos=2, frames=8, channels=64, height=2, width=2)
    module_set = MotionModuleSet(MotionModuleConfig("v3", (64,), 1, (), 0, None, 32))
    module_set.down_blocks[0].motion_modules[0] = module
    module_set.set_key_scale(0.4)
    with torch.no_grad():
        ours = module(x, video_length=8)
    expected = reference_motion_module(dict(module.state_dict()), x, 8, key_scale=0.4)
    assert_near(ours, expected, 1e-10)
    with pytest.raises(Pix2GifInputError, match="motion scale"):
        module_set.set_key_scale(-1.0)


def test_variant_receives_layer_normed_tokens_and_position_encoding() -> None:
    module = random_module(channels=64, pe_length=32)
    x = random_frames(videos=2, frames=6, channels=64, height=3, width=2)
    calls: list[tuple[tuple[int, ...], Tensor]] = []

    def recording_variant(attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        calls.append((tuple(hidden.shape), pe))
        return global_temporal_attention(attn, hidden, pe)

    def no_mixing(attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        return attn.to_v(hidden + pe)

    with torch.no_grad():
        default = module(x, video_length=6)
        recorded = module(x, video_length=6, variant=recording_variant)
        unmixed = module(x, video_length=6, variant=no_mixing)
    assert torch.equal(recorded, default)
    assert len(calls) == 2 and all(shape == (2 * 3 * 2, 6, 64) for shape, _ in calls)
    assert_near(calls[0][1], reference_position_table(6, 64), 1e-12)
    # without attention across frames, frame 0 of video 0 no longer depends on frame 1
    changed = x.clone()
    changed[1] += 1.0
    with torch.no_grad():
        unmixed_changed = module(changed, video_length=6, variant=no_mixing)
    assert torch.equal(unmixed_changed[0], unmixed[0])


def test_zero_proj_out_is_exact_identity() -> None:
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    with torch.no_grad():
        module.temporal_transformer.proj_out.weight.zero_()
        module.temporal_transformer.proj_out.bias.zero_()
        x = random_frames(videos=2, frames=5, channels=32, height=4, width=4).float()
        assert torch.equal(module(x, video_length=5), x)


def test_frames_mix_within_a_video_but_videos_stay_apart() -> None:
    frames, changed_frame = 6, 2
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    x = random_frames(videos=2, frames=frames, channels=32, height=3, width=3).float()
    changed = x.clone()
    changed[changed_frame] += torch.randn_like(changed[changed_frame])
    with torch.no_grad():
        before, after = module(x, video_length=frames), module(changed, video_length=frames)
    for frame in range(frames):
        assert (after[frame] - before[frame]).abs().max() > 1e-4, f"frame {frame} of video 0 did not change"
    assert torch.equal(after[frames:], before[frames:]), "video 1 changed when only video 0 did"


def test_more_frames_than_position_encoding_is_refused() -> None:
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    x = torch.randn(25, 32, 2, 2)
    with pytest.raises(Pix2GifInputError, match=r"25 frames.*\(24 frames\).*at most 24.*v2/v3"):
        module(x, video_length=25)
    module(x[:24], video_length=24)  # the limit itself is fine


def test_bad_frame_batch_and_channels_are_refused() -> None:
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    with pytest.raises(Pix2GifInputError, match=r"batch of 10 latents.*video_length=4"):
        module(torch.randn(10, 32, 2, 2), video_length=4)
    with pytest.raises(Pix2GifInputError, match=r"\(8, 64, 2, 2\).*expects \(frames, 32"):
        module(torch.randn(8, 64, 2, 2), video_length=4)


def sdpa_with_softmax_scale(attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
    """The attention as computed before the kernel became pluggable: SDPA with scale key_scale/√d."""
    tokens = hidden + pe
    q, k, v = (projection(tokens).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
               for projection in (attn.to_q, attn.to_k, attn.to_v))
    scale = attn.key_scale / math.sqrt(q.shape[-1])
    return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).flatten(-2)


@pytest.mark.parametrize("key_scale", [1.0, 0.4, 1.7])
def test_float32_numbers_are_those_of_sdpa_with_a_softmax_scale(key_scale: float) -> None:
    module = random_module(channels=64, pe_length=24, dtype=torch.float32)
    for attention in module.modules():
        if isinstance(attention, TemporalSelfAttention):
            attention.key_scale = key_scale
    x = random_frames(videos=2, frames=16, channels=64, height=3, width=5).float()
    with torch.no_grad():
        ours = module(x, video_length=16)
        before = module(x, video_length=16, variant=sdpa_with_softmax_scale)
    if key_scale == 1.0:
        assert torch.equal(ours, before)
    else:  # k·s instead of a scale s/√d inside SDPA: float32 rounding only (a few units of the last place)
        assert_near(ours, before, 8 * torch.finfo(torch.float32).eps * before.abs().max().item())


def test_attend_calls_its_kernel_with_the_keys_scaled() -> None:
    attention = TemporalSelfAttention(16, 24, heads=4).double()
    attention.key_scale = 0.7
    calls = []

    def kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        calls.append((q, k, v, mask))
        return v * 2.0

    attention.kernel = kernel
    q, k, v = (torch.randn(3, 5, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(3, 1, 5, 5, dtype=torch.float64)
    out = attention.attend(q, k, v, mask)
    [(q_heads, k_heads, v_heads, passed_mask)] = calls
    split = lambda t: t.reshape(3, 5, 4, 4).transpose(1, 2)  # noqa: E731  (N, F, C) → (N, heads, F, d)
    assert torch.equal(q_heads, split(q)) and torch.equal(v_heads, split(v)) and passed_mask is mask
    assert_near(k_heads, split(k) * 0.7, 1e-15)
    assert torch.equal(out, v * 2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_attention_above_grid_limit_matches_cpu() -> None:
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    attention = module.temporal_transformer.transformer_blocks[0].attention_blocks[0]
    q, k, v = (torch.randn(9000, 16, 32) for _ in range(3))  # 9000 · 8 heads > 65,535
    expected = attention.attend(q, k, v)
    on_gpu = attention.cuda().attend(q.cuda(), k.cuda(), v.cuda()).cpu()
    assert_near(on_gpu, expected, 1e-4)


def test_bfloat16_runs_close_to_float32() -> None:
    module = random_module(channels=32, pe_length=24, dtype=torch.float32)
    x = random_frames(videos=1, frames=4, channels=32, height=2, width=2).float()
    with torch.no_grad():
        expected = module(x, video_length=4)
        low = module.to(torch.bfloat16)(x.bfloat16(), video_length=4)
    assert low.dtype == torch.bfloat16
    assert_near(low.float(), expected, 0.1)


def test_state_dict_has_official_keys_and_no_position_encoding() -> None:
    keys = set(MotionModule(32, 24).state_dict())
    expected = {T + "norm.weight", T + "norm.bias", T + "proj_in.weight", T + "proj_in.bias"}
    expected |= {T + "proj_out.weight", T + "proj_out.bias"}
    for index in range(2):
        attention = f"{BLOCK}attention_blocks.{index}."
        expected |= {attention + name for name in ("to_q.weight", "to_k.weight", "to_v.weight")}
        expected |= {attention + "to_out.0.weight", attention + "to_out.0.bias"}
        expected |= {f"{BLOCK}norms.{index}.weight", f"{BLOCK}norms.{index}.bias"}
    expected |= {BLOCK + f"ff.net.{layer}.{kind}" for layer in ("0.proj", "2") for kind in ("weight", "bias")}
    expected |= {BLOCK + "ff_norm.weight", BLOCK + "ff_norm.bias"}
    assert keys == expected


def test_module_set_names_channels_and_unet_positions() -> None:
    config = MotionModuleConfig("v2", (32, 64, 128, 128), 2, (128, 128, 64, 32), 3, 128, 32)
    module_set = MotionModuleSet(config)
    names = [name for name, _ in module_set.named_motion_modules()]
    down = [f"down_blocks.{i}.motion_modules.{j}" for i in range(4) for j in range(2)]
    up = [f"up_blocks.{i}.motion_modules.{j}" for i in range(4) for j in range(3)]
    assert names == down + ["mid_block.motion_modules.0"] + up
    assert [unet_position(name) for name in down] == [("input", i) for i in (1, 2, 4, 5, 7, 8, 10, 11)]
    assert [unet_position(name) for name in up] == [("output", i) for i in range(12)]
    assert unet_position("mid_block.motion_modules.0") == ("middle", 0)
    assert [module_set.channels(name) for name in names[::4]] == [32, 128, 128, 128, 64, 32]
    assert module_set.down_blocks[1].motion_modules[0].channels == 64
    with pytest.raises(ValueError):
        unet_position("down_blocks.0.attentions.0")


def test_unknown_version_is_refused() -> None:
    with pytest.raises(Pix2GifInputError, match="'v4' is unknown"):
        MotionModuleConfig("v4", (32,), 2, (32,), 3, None, 32)


def test_injected_module_scales_keys_per_position() -> None:
    """A per-position motion scale (FrameContext.key_scales, as Regional Motion's soft confinement sets it) acts
    at each position of every video as the module's key scale there: 0 = frames averaged, 1 = unchanged."""
    from pix2gif_core.animatediff.injection import FrameContext, InjectedMotionModule

    module = random_module(channels=64, pe_length=32)
    x = random_frames(videos=2, frames=6, channels=64, height=2, width=3)
    scales = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 2.0]], dtype=torch.float64)
    context = FrameContext(video_length=6, key_scales=lambda hw, like: scales.flatten().to(like))
    injected = InjectedMotionModule("down_blocks.0.motion_modules.0", module, context)
    with torch.no_grad():
        ours = injected(x)
        context.key_scales = None
        plain = injected(x)
    expected = reference_motion_module(dict(module.state_dict()), x, 6, position_scales=scales)
    assert_near(ours, expected, 1e-10)
    assert torch.equal(ours[:, :, 0, 1], plain[:, :, 0, 1]) and torch.equal(ours[:, :, 1, 0], plain[:, :, 1, 0])
    assert (ours[:, :, 0, 0] - plain[:, :, 0, 0]).abs().max() > 1e-3


def test_attend_scales_the_keys_of_each_sequence() -> None:
    torch.manual_seed(3)
    attention = TemporalSelfAttention(16, pe_length=8, heads=2).double()
    q, k, v = (torch.randn(3, 5, 16, dtype=torch.float64) for _ in range(3))
    attention.key_scale_map = torch.tensor([0.0, 1.0, 0.3], dtype=torch.float64)[:, None, None]
    scaled = attention.attend(q, k, v)
    attention.key_scale_map = None
    for n, scale in enumerate((0.0, 1.0, 0.3)):
        attention.key_scale = scale
        assert_near(scaled[n:n + 1], attention.attend(q[n:n + 1], k[n:n + 1], v[n:n + 1]), 1e-12)
    attention.key_scale_map = torch.ones(2, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="2 sequence scales for 3 token sequences"):
        attention.attend(q, k, v)
