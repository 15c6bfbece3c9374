"""Diffusers → LDM UNet names, checked against diffusers' own LDM → diffusers conversion (a peer implementation):
every weight of a tiny SD1.5-topology ``UNet2DConditionModel`` renamed by us and converted back by diffusers'
``convert_ldm_unet_checkpoint`` lands on its own name with its own tensor."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.diffusion.diffusers_unet_names import ldm_unet_name
from pix2gif_core.diffusion.ldm_layout import UNetLayout

diffusers = pytest.importorskip("diffusers")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")

CONFIG = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128, 128),
              layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=64,
              attention_head_dim=8, norm_num_groups=32)
#: the same UNet as LDM hyper-parameters: attention on the first three levels and in the middle
LAYOUT = UNetLayout(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 4, 4),
                    num_res_blocks=(2, 2, 2, 2), input_transformer_depth=(1, 1, 1, 1, 1, 1, 0, 0),
                    middle_transformer_depth=1, output_transformer_depth=(0, 0, 0) + (1,) * 9, context_dim=64,
                    linear_projection=False)


def test_every_diffusers_weight_round_trips_through_diffusers_own_conversion():
    unet = diffusers.UNet2DConditionModel(**CONFIG)
    weights = {name: torch.randn(tensor.shape) for name, tensor in unet.state_dict().items()}
    renamed = {name: ldm_unet_name(name, LAYOUT) for name in weights}
    assert not [name for name, ldm in renamed.items() if ldm is None]
    assert len(set(renamed.values())) == len(renamed), "two diffusers weights on one LDM name"
    ldm = {f"model.diffusion_model.{renamed[name]}": tensor for name, tensor in weights.items()}
    back = single_file_utils.convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert back.keys() == weights.keys()
    assert all(torch.equal(back[name], weights[name]) for name in weights)


@pytest.mark.parametrize("name", ["down_blocks.0.motion_modules.0.temporal_transformer.norm.weight",
                                  "fps_embedding.linear_1.weight", "down_blocks.3.downsamplers.0.conv.weight",
                                  "up_blocks.3.upsamplers.0.conv.weight", "down_blocks.4.resnets.0.conv1.weight",
                                  "down_blocks.0.resnets.2.conv1.weight", "mid_block.resnets.2.conv1.weight"])
def test_names_that_are_no_weight_of_the_unet_map_to_nothing(name):
    assert ldm_unet_name(name, LAYOUT) is None
