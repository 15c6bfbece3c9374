"""Pix2Gif FlowNet, injection module, interval embedding and warp against a float64 functional reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.pix2gif.flownet import (
    FlowNet,
    IntervalEmbedding,
    motion_guided_concat,
    motion_guided_warp,
)
from tests.fixtures.pix2gif_checkpoints import random_flownet_state

BN_KEYS = ("weight", "bias", "running_mean", "running_var")

# methods.md §2.3 / §2.5 (kernel sizes: the official diffusionmodules/util.py helpers).
CONV_BLOCKS = {  # name: (conv weight shape, BatchNorm channels)
    "conv0": ((64, 4, 3, 3), 64),
    "conv1": ((64, 64, 3, 3), 64),
    "conv1_1": ((128, 64, 3, 3), 128),
    "conv2": ((128, 128, 3, 3), 128),
    "conv2_1": ((128, 128, 3, 3), 128),
    "deconv1": ((128, 32, 4, 4), 32),  # ConvTranspose2d weight is (in, out, k, k)
    "deconv0": ((50, 16, 4, 4), 16),
    "inter_conv1": ((32, 50, 3, 3), 32),
    "inter_conv0": ((16, 18, 3, 3), 16),
}
OTHER_KEYS = {
    "predict_flow2.0.weight": (2, 128, 3, 3), "predict_flow2.0.bias": (2,),
    "predict_flow1.0.weight": (2, 32, 3, 3), "predict_flow1.0.bias": (2,),
    "predict_flow0.0.weight": (2, 16, 3, 3), "predict_flow0.0.bias": (2,),
    "upsampled_flow2_to_1.weight": (2, 2, 4, 4), "upsampled_flow2_to_1.bias": (2,),
    "upsampled_flow1_to_0.weight": (2, 2, 4, 4), "upsampled_flow1_to_0.bias": (2,),
    "injection1.linear.weight": (16, 77, 3), "injection1.linear.bias": (16,),
    "injection1.norm.weight": (256, 16), "injection1.norm.bias": (256, 16),
}


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = dict(OTHER_KEYS)
    for name, (weight, channels) in CONV_BLOCKS.items():
        shapes[f"{name}.0.weight"] = weight
        shapes[f"{name}.0.bias"] = (weight[1] if name.startswith("deconv") else weight[0],)
        shapes.update({f"{name}.1.{key}": (channels,) for key in BN_KEYS})
        shapes[f"{name}.1.num_batches_tracked"] = ()
    return shapes


def test_state_dict_keys_and_shapes_match_the_official_layout() -> None:
    state = FlowNet().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _expected_shapes()


# ---------------------------------------------------------------- float64 functional reference

def _bn_lrelu(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    x = F.batch_norm(x, s[f"{name}.1.running_mean"], s[f"{name}.1.running_var"], s[f"{name}.1.weight"],
                     s[f"{name}.1.bias"], training=False, eps=1e-5)
    return F.leaky_relu(x, 0.2)


def _conv(x: torch.Tensor, s: dict[str, torch.Tensor], name: str, stride: int = 1) -> torch.Tensor:
    return _bn_lrelu(F.conv2d(x, s[f"{name}.0.weight"], s[f"{name}.0.bias"], stride=stride, padding=1), s, name)


def _deconv(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return _bn_lrelu(F.conv_transpose2d(x, s[f"{name}.0.weight"], s[f"{name}.0.bias"], stride=2, padding=1), s, name)


def _head(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return torch.tanh(F.conv2d(x, s[f"{name}.0.weight"], s[f"{name}.0.bias"], padding=1))


def _upsample(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.conv_transpose2d(x, s[f"{name}.weight"], s[f"{name}.bias"], stride=2, padding=1)


def _injection(cond: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    y = F.conv1d(cond, s["injection1.linear.weight"], s["injection1.linear.bias"], stride=3, padding=1)  # (B,16,256)
    mean = y.mean(dim=(1, 2), keepdim=True)
    var = ((y - mean) ** 2).mean(dim=(1, 2), keepdim=True)
    normed = (y - mean) / torch.sqrt(var + 1e-5)
    normed = normed * s["injection1.norm.weight"].T + s["injection1.norm.bias"].T  # norm params are (256, 16)
    return torch.relu(normed).reshape(cond.shape[0], 16, 16, 16)


def _reference_flow(latent: torch.Tensor, cond: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    c0 = _conv(latent, s, "conv0")
    c1 = _conv(_conv(c0, s, "conv1", stride=2), s, "conv1_1")
    c2 = _conv(_conv(c1, s, "conv2", stride=2), s, "conv2_1")
    flow2_up = _upsample(_head(c2, s, "predict_flow2"), s, "upsampled_flow2_to_1")
    concat1 = torch.cat([_deconv(c2, s, "deconv1"), flow2_up, _injection(cond, s)], dim=1)
    flow1_up = _upsample(_head(_conv(concat1, s, "inter_conv1"), s, "predict_flow1"), s, "upsampled_flow1_to_0")
    concat0 = torch.cat([_deconv(concat1, s, "deconv0"), flow1_up], dim=1)
    return _head(_conv(concat0, s, "inter_conv0"), s, "predict_flow0")


def _reference_sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling by gather; grid (B, 2, H, W) absolute in [-1, 1], align_corners=False, zeros outside."""
    b, c, h, w = image.shape
    x = ((grid[:, 0] + 1) * w - 1) / 2
    y = ((grid[:, 1] + 1) * h - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    out = torch.zeros(b, c, *grid.shape[-2:], dtype=image.dtype)
    flat = image.reshape(b, c, h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(b, 1, -1).expand(b, c, -1)
            values = torch.gather(flat, 2, index).reshape(out.shape)
            out = out + values * (weight * inside)[:, None]
    return out


@pytest.fixture(scope="module")
def flownet_and_state() -> tuple[FlowNet, dict[str, torch.Tensor]]:
    state = {k: v.double() if v.is_floating_point() else v
             for k, v in random_flownet_state(torch.Generator().manual_seed(3)).items()}
    net = FlowNet().double()
    net.load_state_dict(state)
    return net.eval(), state


def test_flownet_matches_the_functional_reference(flownet_and_state) -> None:
    net, state = flownet_and_state
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 4, 32, 32, generator=generator, dtype=torch.float64) * 2
    cond = torch.randn(2, 77, 768, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        flow = net(latent, cond)
    expected = _reference_flow(latent, cond, state)
    assert flow.shape == (2, 2, 32, 32)
    assert flow.abs().max() < 1 and flow.std() > 0.05
    torch.testing.assert_close(flow, expected, rtol=0, atol=1e-10)


def test_warp_uses_the_flow_as_an_absolute_grid_with_zero_padding(flownet_and_state) -> None:
    net, _ = flownet_and_state
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 4, 32, 32, generator=generator, dtype=torch.float64)
    flow = torch.rand(2, 2, 32, 32, generator=generator, dtype=torch.float64) * 2.4 - 1.2  # reaches outside
    torch.testing.assert_close(motion_guided_warp(latent, flow), _reference_sample(latent, flow), rtol=0, atol=1e-12)
    cond = torch.randn(2, 77, 768, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        concat = motion_guided_concat(net, latent, cond)
    expected_warp = _reference_sample(latent, _reference_flow(latent, cond, net.state_dict()))
    torch.testing.assert_close(concat, torch.cat([latent, expected_warp], dim=1), rtol=0, atol=1e-10)


def test_identity_grid_returns_the_source() -> None:
    latent = torch.randn(1, 4, 32, 32, dtype=torch.float64)
    centres = (2 * torch.arange(32, dtype=torch.float64) + 1) / 32 - 1
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    torch.testing.assert_close(motion_guided_warp(latent, torch.stack([xs, ys])[None]), latent, rtol=0, atol=1e-12)


def test_zero_source_rows_give_zero_conditioning(flownet_and_state) -> None:
    net, _ = flownet_and_state
    with torch.no_grad():
        concat = motion_guided_concat(net, torch.zeros(1, 4, 32, 32, dtype=torch.float64),
                                      torch.randn(1, 77, 768, dtype=torch.float64))
    assert concat.shape == (1, 8, 32, 32) and not concat.any()


def test_interval_embedding_rows_and_range() -> None:
    embedding = IntervalEmbedding()
    assert tuple(embedding.state_dict()["embedding.weight"].shape) == (1024, 768)
    out = embedding(torch.tensor([2, 19, 1023]))
    assert out.shape == (3, 1, 768)
    torch.testing.assert_close(out[:, 0], embedding.embedding.weight[[2, 19, 1023]], rtol=0, atol=0)
    for bad in (torch.tensor([1024]), torch.tensor([-1]), torch.tensor([2.0])):
        with pytest.raises(Pix2GifInputError, match="motion magnitudes"):
            embedding(bad)


@pytest.mark.parametrize("size", [(64, 64), (32, 48)])
def test_other_latent_sizes_are_refused_with_the_256_rule(size: tuple[int, int]) -> None:
    latent = torch.zeros(1, 4, *size)
    with pytest.raises(Pix2GifInputError, match="256×256"):
        FlowNet()(latent, torch.zeros(1, 77, 768))
    with pytest.raises(Pix2GifInputError, match="256×256"):
        motion_guided_warp(latent, torch.zeros(1, 2, *size))


def test_condition_shape_is_checked() -> None:
    with pytest.raises(Pix2GifInputError, match="FlowNet condition"):
        FlowNet()(torch.zeros(2, 4, 32, 32), torch.zeros(1, 77, 768))


def test_half_precision_source_latents_warp_like_float32(flownet_and_state) -> None:
    """A float16 source latent (half-precision intermediates) runs through the float FlowNet and float32 sampling:
    finite, in float16, within fp16 rounding of the float32 result."""
    net = FlowNet()
    net.load_state_dict({k: v.float() for k, v in flownet_and_state[1].items()})
    generator = torch.Generator().manual_seed(2)
    latent = torch.randn(2, 4, 32, 32, generator=generator)
    cond = torch.randn(2, 77, 768, generator=generator)
    with torch.no_grad():
        half = motion_guided_concat(net.eval(), latent.half(), cond.half())
        full = motion_guided_concat(net, latent.half().float(), cond.half().float())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0, atol=1e-2)
