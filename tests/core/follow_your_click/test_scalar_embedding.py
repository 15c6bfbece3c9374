"""Follow-Your-Click's fps / motion-strength embedding against diffusers (a peer implementation of the official
``time_proj`` + ``TimestepEmbedding``): ``Timesteps(C, flip_sin_to_cos=True, downscale_freq_shift=0)`` then the
MLP, with the same weights."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.follow_your_click.scalar_embedding import ScalarEmbedding, sinusoidal_projection

embeddings = pytest.importorskip("diffusers.models.embeddings")
VALUES = torch.tensor([0.0, 1.0, 2.0, 4.0, 7.5, 24.0])


@pytest.mark.parametrize("channels", [320, 32])
def test_the_projection_is_diffusers_time_proj_with_cosines_first_and_no_shift(channels):
    expected = embeddings.get_timestep_embedding(VALUES, channels, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(sinusoidal_projection(VALUES, channels), expected, atol=1e-6)


def test_the_embedding_is_diffusers_timestep_embedding_on_that_projection():
    torch.manual_seed(0)
    peer = embeddings.TimestepEmbedding(32, 128)
    ours = ScalarEmbedding(32, 128)
    ours.load_state_dict(peer.state_dict())  # same parameter names: linear_1, linear_2
    projection = embeddings.Timesteps(32, flip_sin_to_cos=True, downscale_freq_shift=0)
    with torch.no_grad():
        assert torch.allclose(ours(VALUES, torch.float32), peer(projection(VALUES)), atol=1e-6)
        assert (ours(VALUES[:1], torch.float32) - ours(VALUES[1:2], torch.float32)).abs().max() > 1e-3


def test_a_zero_second_layer_adds_nothing_whatever_the_value():
    embedding = ScalarEmbedding(32, 128)
    with torch.no_grad():
        embedding.linear_2.weight.zero_()
        embedding.linear_2.bias.zero_()
        assert torch.equal(embedding(VALUES, torch.float32), torch.zeros(len(VALUES), 128))
