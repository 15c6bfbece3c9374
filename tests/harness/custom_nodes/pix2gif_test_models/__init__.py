"""Test-only custom nodes: a tiny SD1.5-topology MODEL/CLIP/VAE built in-process from ComfyUI's own classes.

UNet: 4 levels (channel_mult 1,2,4,4 of 32 channels), 2 res blocks per level, attention on the first three levels,
middle block with attention – the SD1.5 layout at 1/10 of the width, so AnimateDiff positions and channel
checks behave as on the real model. CLIP: 2 layers × 64 (real CLIP tokenizer). VAE: TAESD with random weights.
Registered only by the test harness; never shipped to users.
"""
import json
import math
import os
import tempfile

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.taesd.taesd

CONTEXT_DIM = 64
MODEL_CHANNELS = 32


def _tiny_clip_config_path() -> str:
    config_dir = os.path.dirname(comfy.sd1_clip.__file__)
    with open(os.path.join(config_dir, "sd1_clip_config.json")) as f:
        config = json.load(f)
    config.update(hidden_size=CONTEXT_DIM, intermediate_size=128, num_attention_heads=2,
                  num_hidden_layers=2, projection_dim=CONTEXT_DIM)
    path = os.path.join(tempfile.gettempdir(), "pix2gif_tiny_clip_config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path


TINY_CLIP_CONFIG = _tiny_clip_config_path()


def init_weights(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI's ops leave weights uninitialised: norms 1/0, linear/conv N(0, 1/fan_in), embeddings N(0, .02)."""
    generator = torch.Generator().manual_seed(seed)
    nn = torch.nn
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.zero_()


class TinySD15(comfy.supported_models_base.BASE):
    unet_config = dict(
        image_size=32, in_channels=4, out_channels=4, model_channels=MODEL_CHANNELS,
        num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # popped from the end: output_blocks.0 first
        transformer_depth_middle=1, context_dim=CONTEXT_DIM, use_linear_in_transformer=False,
        adm_in_channels=None, use_spatial_transformer=True, legacy=False, use_checkpoint=False,
        use_temporal_resblock=False, use_temporal_attention=False)
    unet_extra_config = {"num_heads": 8, "num_head_channels": -1}
    latent_format = comfy.latent_formats.SD15


class TinyClipText(comfy.sd1_clip.SDClipModel):
    def __init__(self, device="cpu", dtype=None, **kwargs):
        kwargs["textmodel_json_config"] = TINY_CLIP_CONFIG
        super().__init__(device=device, dtype=dtype, **kwargs)


class TinyClip(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, **kwargs):
        kwargs["clip_model"] = TinyClipText
        super().__init__(device=device, dtype=dtype, **kwargs)


class TinySDXLTopology(TinySD15):
    """Three levels like SDXL's UNet (9 input blocks), for 'wrong base model' tests."""
    unet_config = dict(TinySD15.unet_config, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                       transformer_depth=[0, 0, 1, 1, 1, 1], transformer_depth_output=[1, 1, 1, 1, 1, 1, 0, 0, 0])


TOPOLOGIES = {"sd15": TinySD15, "sdxl": TinySDXLTopology}


def build_model(seed: int, topology: str = "sd15") -> comfy.model_patcher.ModelPatcher:
    config_class = TOPOLOGIES[topology]
    config = config_class(dict(config_class.unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def build_clip(seed: int) -> comfy.sd.CLIP:
    with torch.no_grad():
        clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinyClip))
        init_weights(clip.cond_stage_model, seed)
    return clip


def tiny_vae_state(seed: int) -> dict:
    """A TAESD with random weights, as a state dict in TAESD's own key layout (what a VAE file holds)."""
    taesd = comfy.taesd.taesd.TAESD()
    init_weights(taesd, seed)
    return taesd.state_dict()


def build_vae(seed: int) -> comfy.sd.VAE:
    return comfy.sd.VAE(sd=tiny_vae_state(seed))


class TinyCheckpoint:
    """Stands in for CheckpointLoaderSimple in tests; same outputs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "topology": (list(TOPOLOGIES), {"default": "sd15"})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "pix2gif_tests"

    def load(self, seed, topology="sd15"):
        return build_model(seed, topology), build_clip(seed + 1), build_vae(seed + 2)


#: what the capture nodes received in the last prompt, by their `key` input (read by the tests)
CAPTURED: dict = {}


class CaptureLatent:
    """Output node that keeps the LATENT it receives in CAPTURED[key]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "key": ("STRING", {"default": "latent"})}}

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "pix2gif_tests"

    def capture(self, samples, key):
        CAPTURED[key] = samples["samples"].clone()
        return {}


class CaptureImage(CaptureLatent):
    """Output node that keeps the IMAGE batch it receives in CAPTURED[key]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "key": ("STRING", {"default": "image"})}}

    def capture(self, images, key):
        CAPTURED[key] = images.clone()
        return {}


CANCEL_MOMENTS = ["start", "end", "backward"]


class CancelAtModelCall:
    """MODEL → the same MODEL counting its UNet calls in CAPTURED[key] (calls that returned: CAPTURED[key +
    "_finished"]) and pressing Cancel (as the UI's button does) during call ``cancel_at`` (0 = never): an exact step
    counter that does not depend on progress reports, which ComfyUI ≥ 0.33 throttles. ``moment``: Cancel pressed
    as the call starts, as it returns, or (training) when the backward pass reaches the call's output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "cancel_at": ("INT", {"default": 0, "min": 0}),
                             "key": ("STRING", {"default": "model_calls"})},
                "optional": {"moment": (CANCEL_MOMENTS, {"default": "start"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "pix2gif_tests"

    def patch(self, model, cancel_at, key, moment="start"):
        previous = model.model_options.get("model_function_wrapper")
        CAPTURED[key] = CAPTURED[f"{key}_finished"] = 0

        def press(*_):
            comfy.model_management.interrupt_current_processing(True)

        def counting(apply_model, args):
            CAPTURED[key] += 1
            chosen = CAPTURED[key] == cancel_at
            if chosen and moment == "start":
                press()
            if previous is not None:
                output = previous(apply_model, args)
            else:
                output = apply_model(args["input"], args["timestep"], **args["c"])
            CAPTURED[f"{key}_finished"] += 1
            if chosen and moment == "end":
                press()
            if chosen and moment == "backward" and output.requires_grad:
                output.register_hook(press)
            return output

        patched = model.clone()
        patched.set_model_unet_function_wrapper(counting)
        return (patched,)


# --- I2VGen-XL: the text encoder and image encoder stand-ins (CLIP vision in the Hugging Face layout) ----------

def build_clip_vision(projection_dim: int = CONTEXT_DIM, seed: int = 0):
    """A 2-layer CLIP vision model (ComfyUI's own class) whose projected embedding is ``projection_dim`` wide: the
    tiny text CLIP's width for the tiny I2VGen-XL UNet, another width for 'wrong model' tests."""
    import comfy.clip_vision

    config = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32, "image_size": 224,
              "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model",
              "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 32,
              "projection_dim": projection_dim}
    path = os.path.join(tempfile.gettempdir(), f"pix2gif_tiny_clip_vision_{projection_dim}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    model = comfy.clip_vision.ClipVisionModel(path)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every parameter set (ComfyUI leaves them uninitialised), then the usual scales
        for parameter in model.model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    init_weights(model.model, seed)
    return model


class TinyCLIP:
    """Stands in for CLIPLoader (the I2VGen-XL text encoder): the tiny CLIP, as wide as the tiny I2VGen-XL UNet."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 1, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "pix2gif_tests"

    def load(self, seed):
        return (build_clip(seed),)


class TinyCLIPVision:
    """Stands in for CLIPVisionLoader: a tiny CLIP vision model of ``projection_dim``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"projection_dim": ("INT", {"default": CONTEXT_DIM, "min": 8}),
                             "seed": ("INT", {"default": 5, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "pix2gif_tests"

    def load(self, projection_dim, seed):
        return (build_clip_vision(projection_dim, seed),)


class RandomClip:
    """A smooth random clip (frames × height × width × 3, in [0, 1]): bilinear upscale of 4× coarser noise."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("INT", {"default": 3, "min": 1}), "width": ("INT", {"default": 48}),
                             "height": ("INT", {"default": 32}), "seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "pix2gif_tests"

    def make(self, frames, width, height, seed):
        coarse = torch.rand(frames, 3, max(1, height // 4), max(1, width // 4),
                            generator=torch.Generator().manual_seed(seed))
        smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
        return (smooth.movedim(1, -1).contiguous(),)


NODE_CLASS_MAPPINGS = {"Pix2GifTest_TinyCheckpoint": TinyCheckpoint, "Pix2GifTest_CaptureLatent": CaptureLatent,
                       "Pix2GifTest_CaptureImage": CaptureImage, "Pix2GifTest_CancelAtModelCall": CancelAtModelCall,
                       "Pix2GifTest_TinyCLIP": TinyCLIP, "Pix2GifTest_TinyCLIPVision": TinyCLIPVision,
                       "Pix2GifTest_RandomClip": RandomClip}


# --- Pix2Gif: a tiny checkpoint in the exact Lightning layout (methods.md §2.5) -------------------------------

PIX2GIF_CONTEXT_DIM = 768  # CLIP-L width: the interval embedding and the FlowNet's injection module fix it
TINY_PIX2GIF_CLIP = dict(hidden_size=PIX2GIF_CONTEXT_DIM, projection_dim=PIX2GIF_CONTEXT_DIM, num_hidden_layers=1,
                         intermediate_size=128, num_attention_heads=12)
TINY_PIX2GIF_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=32,
                        ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[], dropout=0.0)


class TinyPix2GifUNet(TinySD15):
    """Pix2Gif's 12-channel UNet (noisy | source | warped latents), 768-wide context, shrunk to two levels of one
    ResBlock (32 and 64 channels) with attention on the 16×16 level only, so 32×32 latents stay fast on a CPU."""
    unet_config = dict(TinySD15.unet_config, in_channels=12, context_dim=PIX2GIF_CONTEXT_DIM, num_res_blocks=[1, 1],
                       channel_mult=[1, 2], transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1])


def tiny_pix2gif_parts(seed: int) -> tuple[dict, dict, dict]:
    """(UNet, VAE, CLIP) state dicts with LDM names: the tiny 12-channel UNet, a KL-f8 VAE of 32 channels, and a
    1-layer CLIP text model of CLIP-L width (stored in float16: its 49408-token embedding is most of the file)."""
    import comfy.clip_model
    import comfy.ldm.models.autoencoder
    import comfy.ops

    config = TinyPix2GifUNet(dict(TinyPix2GifUNet.unet_config))
    config.set_inference_dtype(torch.float32, None)
    unet = comfy.model_base.BaseModel(config, device=torch.device("cpu")).diffusion_model
    init_weights(unet, seed)
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=TINY_PIX2GIF_VAE, embed_dim=4)
    init_weights(vae, seed + 1)
    with open(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")) as f:
        clip_config = {**json.load(f), **TINY_PIX2GIF_CLIP}
    with torch.no_grad():
        text_model = comfy.clip_model.CLIPTextModel(clip_config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    init_weights(text_model, seed + 2)
    clip = {k: v.half() for k, v in text_model.state_dict().items() if k.startswith("text_model.")}
    return unet.state_dict(), vae.state_dict(), clip
