"""Reading I2VGen-XL UNet weights in either published layout into :class:`~.unet.I2VGenXLUNet`.

* diffusers (``ali-vilab/i2vgen-xl/unet``): a folder with ``config.json`` and
  ``diffusion_pytorch_model[.fp16].safetensors``, or that weights file alone (renamed, e.g. in
  ``models/diffusion_models``; the architecture is then read from the shapes);
* VGen (``i2vgen_xl_00854500.pth``): ``{'state_dict': LDM names, 'step'}``, read with ``weights_only=True`` and
  renamed by diffusers' conversion rules (scripts/convert_i2vgen_to_diffusers.py). VGen adds the image-latent
  channels twice before ``conv_in`` (``concat += _ximg`` ×2, methods.md §6.2); that factor is folded into
  ``conv_in``'s weights for those channels, so the one network reproduces each reference exactly.

Tensors keep the file's dtype (fp16/bf16 stay half-size); every key and shape is checked, the file is named in
every error.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from ..errors import Pix2GifInputError
from ..weights_file import read_state_dict_file
from .config import LATENT_CHANNELS, I2VGenXLConfig
from .unet import I2VGenXLUNet

DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
#: VGen's ``concat += _ximg`` twice (its own comment: "This is a bug, but it doesn't matter")
VGEN_CONCAT_FACTOR = 2
_VGEN_MARKERS = ("input_blocks.0.0.weight", "local_image_concat.0.weight")
_DIFFUSERS_MARKERS = ("conv_in.weight", "image_latents_proj_in.0.weight")
_RESNET_PARTS = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                 ("out_layers.3.", "conv2."), ("emb_layers.1.", "time_emb_proj."),
                 ("skip_connection.", "conv_shortcut."))
_VGEN_PREFIXES = (("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
                  ("local_image_concat.", "image_latents_proj_in."),
                  ("local_image_embedding.", "image_latents_context_embedding."),
                  ("local_temporal_encoder.layers.0.0.norm.", "image_latents_temporal_encoder.norm1."),
                  ("local_temporal_encoder.layers.0.0.fn.to_out.", "image_latents_temporal_encoder.attn1.to_out."),
                  ("local_temporal_encoder.layers.0.1.net.0.0.", "image_latents_temporal_encoder.ff.net.0.proj."),
                  ("local_temporal_encoder.layers.0.1.net.2.", "image_latents_temporal_encoder.ff.net.2."),
                  ("input_blocks.0.0.", "conv_in."), ("input_blocks.0.1.", "transformer_in."),
                  ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."))
_VGEN_QKV = "local_temporal_encoder.layers.0.0.fn.to_qkv.weight"
_RESNET_MARKER = "resnet."


def load_unet(path: str) -> I2VGenXLUNet:
    """The UNet in ``path``: a diffusers ``unet`` folder, a diffusers weights file, or a VGen ``.pth``."""
    config_json: dict | None = None
    if os.path.isdir(path):
        weights = next((os.path.join(path, name) for name in DIFFUSERS_WEIGHT_NAMES
                        if os.path.isfile(os.path.join(path, name))), None)
        if weights is None:
            raise Pix2GifInputError(f"Folder '{path}' holds no diffusers UNet weights "
                                    f"({' / '.join(DIFFUSERS_WEIGHT_NAMES)}); point to the 'unet' folder.")
        config_path = os.path.join(path, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as handle:
                config_json = json.load(handle)
        path = weights
    return unet_from_state_dict(read_state_dict_file(path), path, config_json)


def unet_from_state_dict(state: Mapping[str, object], source: str, config_json: dict | None = None) -> I2VGenXLUNet:
    """Build the UNet from a file's top-level dict (``source`` names it in errors), in the stored dtype."""
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if all(marker in tensors for marker in _VGEN_MARKERS):
        tensors = vgen_to_diffusers(tensors, source)
    elif not all(marker in tensors for marker in _DIFFUSERS_MARKERS):
        raise Pix2GifInputError(f"'{source}' is not an I2VGen-XL UNet ({_what_it_is(tensors)}); use the UNet of "
                                "ali-vilab/i2vgen-xl (unet/diffusion_pytorch_model.safetensors or "
                                "i2vgen_xl_00854500.pth).")
    if config_json is not None:
        config = I2VGenXLConfig.from_diffusers(config_json, source)
    else:
        try:
            config = I2VGenXLConfig.from_state_dict({key: tuple(t.shape) for key, t in tensors.items()})
        except KeyError as missing:
            raise Pix2GifInputError(f"'{source}' lacks the I2VGen-XL tensor {missing}; the file is incomplete.") \
                from None
    with torch.device("meta"):
        unet = I2VGenXLUNet(config)
    _check_keys(unet, tensors, source)
    unet.load_state_dict(tensors, assign=True)
    return unet.eval().requires_grad_(False)


def _what_it_is(tensors: Mapping[str, Tensor]) -> str:
    keys = " ".join(list(tensors)[:2000])
    if "time_stack" in keys or "time_mixer" in keys:
        return "it looks like Stable Video Diffusion"
    if "model.diffusion_model.input_blocks" in keys or "down_blocks.0.attentions.0.transformer_blocks" in keys:
        return "it looks like a Stable Diffusion image UNet/checkpoint, which has no temporal layers"
    return f"none of its {len(tensors)} tensors has I2VGen-XL's names"


def _check_keys(unet: I2VGenXLUNet, tensors: Mapping[str, Tensor], source: str) -> None:
    expected = {name: tuple(t.shape) for name, t in unet.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f"{k} {tuple(tensors[k].shape)} (expected {expected[k]})" for k in set(expected) & set(tensors)
                   if tuple(tensors[k].shape) != expected[k])
    problems = [f"{label}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if items]
    if problems:
        raise Pix2GifInputError(f"'{source}' does not match the I2VGen-XL UNet its shapes describe ("
                                + "; ".join(problems) + "). The file is damaged or of another model.")


def vgen_to_diffusers(tensors: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """VGen/LDM names → diffusers names, the fused ``to_qkv`` split, Conv1d projections as Linear, and the ×2
    concat folded into ``conv_in``."""
    prefixes = list(_VGEN_PREFIXES) + list(_trunk_prefixes(tensors))
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key == _VGEN_QKV:
            target = "image_latents_temporal_encoder.attn1."
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"{target}{name}.weight"] = part
            continue
        old, new = max(((o, n) for o, n in prefixes if key.startswith(o)), key=lambda p: len(p[0]),
                       default=("", ""))
        rest = key[len(old):]
        if new.endswith(_RESNET_MARKER):
            new = new[:-len(_RESNET_MARKER)]
            rest = next((b + rest[len(a):] for a, b in _RESNET_PARTS if rest.startswith(a)), rest)
        name = new + rest
        if re.search(r"\.proj_(in|out)\.weight$", name) and value.dim() == 3:
            value = value[..., 0]  # Conv1d (out, in, 1) of the temporal transformers → Linear
        out[name] = value
    conv_in = out.get("conv_in.weight")
    if conv_in is None or conv_in.shape[1] != 2 * LATENT_CHANNELS:
        raise Pix2GifInputError(f"'{source}': input_blocks.0.0 is not an 8-channel conv_in; not I2VGen-XL.")
    scaled = conv_in.clone()
    scaled[:, LATENT_CHANNELS:] *= VGEN_CONCAT_FACTOR
    out["conv_in.weight"] = scaled
    return out


def _trunk_prefixes(tensors: Mapping[str, Tensor]) -> Iterator[tuple[str, str]]:
    """(VGen prefix, diffusers prefix) for the input/middle/output blocks, the structure read from the keys
    present. ResNet prefixes end in :data:`_RESNET_MARKER` (stripped when applied) so their inner names are
    renamed as well."""
    keys = set(tensors)
    ordinals = sorted({int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    level, layer = 0, 0
    for i in ordinals[1:]:
        if f"input_blocks.{i}.op.weight" in keys:
            yield f"input_blocks.{i}.op.", f"down_blocks.{level}.downsamplers.0.conv."
            level, layer = level + 1, 0
            continue
        yield from _layer_prefixes(f"input_blocks.{i}", f"down_blocks.{level}", layer)
        layer += 1
    yield from _layer_prefixes("middle_block", "mid_block", 0, attention_at=1, second_resnet=3)
    outputs = sorted({int(m.group(1)) for k in keys if (m := re.match(r"output_blocks\.(\d+)\.", k))})
    per_level = _layers_per_up_level(keys, ordinals)
    for i in outputs:
        level, layer = divmod(i, per_level)
        yield from _layer_prefixes(f"output_blocks.{i}", f"up_blocks.{level}", layer)
        for slot in (1, 2, 3):
            if f"output_blocks.{i}.{slot}.conv.weight" in keys:
                yield f"output_blocks.{i}.{slot}.conv.", f"up_blocks.{level}.upsamplers.0.conv."


def _layers_per_up_level(keys: set[str], ordinals: list[int]) -> int:
    """ResNets per up level = ResNets per down level + 1, counted on the first down level."""
    first = 0
    for i in ordinals[1:]:
        if f"input_blocks.{i}.op.weight" in keys:
            break
        first += 1
    return first + 1


def _layer_prefixes(old: str, new: str, layer: int, attention_at: int = 1,
                    second_resnet: int | None = None) -> Iterator[tuple[str, str]]:
    yield f"{old}.0.", f"{new}.resnets.{layer}.{_RESNET_MARKER}"
    yield f"{old}.0.temopral_conv.", f"{new}.temp_convs.{layer}."
    yield f"{old}.{attention_at}.", f"{new}.attentions.{layer}."
    yield f"{old}.{attention_at + 1}.", f"{new}.temp_attentions.{layer}."
    if second_resnet is not None:
        yield f"{old}.{second_resnet}.", f"{new}.resnets.{layer + 1}.{_RESNET_MARKER}"
        yield f"{old}.{second_resnet}.temopral_conv.", f"{new}.temp_convs.{layer + 1}."
