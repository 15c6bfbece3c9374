"""Pix2Gif's motion-guided warping module (methods.md §2.3) with the official parameter names.

The FlowNet turns the *unscaled* source latent (B, 4, 32, 32) and the condition (CLIP text + interval embedding,
(B, 77, 768)) into flow0 (B, 2, 32, 32) in [-1, 1]; flow0 is used directly as the absolute ``grid_sample`` grid
(channel 0 = x, 1 = y) to warp the source latent. Only 32×32 latents (256×256 images) work: the injection module
reshapes 256 features into a fixed 16×16 map.

Block layout (the official ``conv`` / ``deconv`` / ``i_conv`` / ``predict_flow`` helpers, diffusionmodules/util.py):
conv and inter_conv blocks = Conv2d k3, padding 1, bias → BatchNorm2d → LeakyReLU(0.2) (keys ``.0`` and ``.1``);
deconv blocks = ConvTranspose2d k4 s2 p1, bias → BatchNorm2d → LeakyReLU(0.2); flow heads = Conv2d k3 p1 → 2
channels → Tanh (key ``.0``); flow upsamplers = ConvTranspose2d(2, 2, k4, s2, p1) with bias. BatchNorm runs in
eval mode (running statistics) at inference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Pix2GifInputError

LATENT_SIZE = 32
IMAGE_SIZE = 256
CONTEXT_TOKENS = 77
CONTEXT_DIM = 768
INTERVAL_VOCABULARY = 1024
LATENT_CHANNELS = 4


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


def _deconv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


def _flow_head(in_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 2, kernel_size=3, padding=1), nn.Tanh())


class IntervalEmbedding(nn.Module):
    """Motion magnitude m ∈ [0, 1023] → (B, 1, 768), added to every context token (key ``embedding.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(INTERVAL_VOCABULARY, CONTEXT_DIM)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """``magnitudes``: (B,) integers → (B, 1, 768)."""
        if magnitudes.dim() != 1 or magnitudes.is_floating_point():
            raise Pix2GifInputError(f"motion magnitudes: expected a 1-D integer tensor, got {magnitudes.dtype} {tuple(magnitudes.shape)}.")
        if bool(((magnitudes < 0) | (magnitudes >= INTERVAL_VOCABULARY)).any()):
            raise Pix2GifInputError(
                f"motion magnitudes: {magnitudes.tolist()} leave the embedding range 0..{INTERVAL_VOCABULARY - 1}."
            )
        return self.embedding(magnitudes.to(self.embedding.weight.device))[:, None, :]


class InjectionModule(nn.Module):
    """Condition (B, 77, 768) → (B, size, size, size): Conv1d over tokens (77 → size, k3 s3 p1: 768 → 256
    features), LayerNorm([size², size]) over (features, channels), ReLU, reshape to a size×size map."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.size = size
        self.linear = nn.Conv1d(CONTEXT_TOKENS, size, kernel_size=3, stride=3, padding=1)
        self.norm = nn.LayerNorm([size * size, size])

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        features = self.linear(condition)
        features = torch.relu(self.norm(features.transpose(1, 2))).transpose(1, 2)
        return features.reshape(condition.shape[0], self.size, self.size, self.size)


class FlowNet(nn.Module):
    """Pix2Gif FlowNet (ngf 64, 4 input channels): (B, 4, 32, 32) latent + (B, 77, 768) condition → flow0."""

    def __init__(self, ngf: int = 64, in_channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        self.conv0 = _conv_block(in_channels, ngf)
        self.conv1 = _conv_block(ngf, ngf, stride=2)
        self.conv1_1 = _conv_block(ngf, ngf * 2)
        self.conv2 = _conv_block(ngf * 2, ngf * 2, stride=2)
        self.conv2_1 = _conv_block(ngf * 2, ngf * 2)
        concat1 = ngf // 2 + 2 + ngf // 4
        self.deconv1 = _deconv_block(ngf * 2, ngf // 2)
        self.deconv0 = _deconv_block(concat1, ngf // 4)
        self.inter_conv1 = _conv_block(concat1, ngf // 2)
        self.inter_conv0 = _conv_block(ngf // 4 + 2, ngf // 4)
        self.predict_flow2 = _flow_head(ngf * 2)
        self.predict_flow1 = _flow_head(ngf // 2)
        self.predict_flow0 = _flow_head(ngf // 4)
        self.upsampled_flow2_to_1 = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1)
        self.upsampled_flow1_to_0 = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1)
        self.injection1 = InjectionModule(ngf // 4)

    def forward(self, source_latent: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``source_latent`` (B, 4, 32, 32) unscaled VAE mode, ``condition`` (B, 77, 768) → flow0 (B, 2, 32, 32)."""
        require_pix2gif_latent(source_latent, "source latent")
        if condition.shape != (source_latent.shape[0], CONTEXT_TOKENS, CONTEXT_DIM):
            raise Pix2GifInputError(
                f"FlowNet condition: expected ({source_latent.shape[0]}, {CONTEXT_TOKENS}, {CONTEXT_DIM}) (CLIP-L text"
                f" + interval embedding, one per latent), got {tuple(condition.shape)}."
            )
        features2 = self.conv2_1(self.conv2(self.conv1_1(self.conv1(self.conv0(source_latent)))))
        flow2_up = self.upsampled_flow2_to_1(self.predict_flow2(features2))
        concat1 = torch.cat([self.deconv1(features2), flow2_up, self.injection1(condition)], dim=1)
        flow1_up = self.upsampled_flow1_to_0(self.predict_flow1(self.inter_conv1(concat1)))
        concat0 = torch.cat([self.deconv0(concat1), flow1_up], dim=1)
        return self.predict_flow0(self.inter_conv0(concat0))


def require_pix2gif_latent(latent: torch.Tensor, name: str) -> None:
    """Raise unless ``latent`` is (B, 4, 32, 32): Pix2Gif works on 256×256 images only."""
    if latent.dim() != 4 or latent.shape[1] != LATENT_CHANNELS:
        raise Pix2GifInputError(f"{name}: expected a (B, 4, 32, 32) SD1.5 latent, got {tuple(latent.shape)}.")
    if latent.shape[-2:] != (LATENT_SIZE, LATENT_SIZE):
        height, width = latent.shape[-2:]
        raise Pix2GifInputError(
            f"{name}: Pix2Gif needs 256×256 images (32×32 latents), got a {height}×{width} latent"
            f" (≈{8 * width}×{8 * height} pixels); resize the source image to 256×256 first."
        )


def motion_guided_warp(source_latent: torch.Tensor, flow0: torch.Tensor) -> torch.Tensor:
    """Warp the unscaled source latent (B, 4, 32, 32) with flow0 (B, 2, 32, 32) used as the *absolute*
    normalised sampling grid (bilinear, zeros outside, ``align_corners=False``) → (B, 4, 32, 32); sampled in
    float32 (half-precision ``grid_sample`` is unreliable on CPUs), returned in the latent's dtype."""
    require_pix2gif_latent(source_latent, "source latent")
    if flow0.shape != (source_latent.shape[0], 2, LATENT_SIZE, LATENT_SIZE):
        raise Pix2GifInputError(f"flow: expected ({source_latent.shape[0]}, 2, 32, 32), got {tuple(flow0.shape)}.")
    work = torch.promote_types(source_latent.dtype, torch.float32)
    warped = F.grid_sample(source_latent.to(work), flow0.permute(0, 2, 3, 1).to(work), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    return warped.to(source_latent.dtype)


def motion_guided_concat(flownet: FlowNet, source_latent: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The UNet's 8 conditioning channels: [source latent | FlowNet-warped source latent] → (B, 8, 32, 32).

    Rows whose source latent is zero (the unconditional CFG branch) come out all zero, as in the official code.
    The FlowNet computes in its weights' dtype; the result has the source latent's.
    """
    weights = next(flownet.parameters())
    flow0 = flownet(source_latent.to(weights.dtype), condition.to(weights.dtype))
    return torch.cat([source_latent, motion_guided_warp(source_latent, flow0)], dim=1)
