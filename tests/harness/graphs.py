"""API prompts used by the integration tests (and nothing else): small graphs around the tiny test model."""
from __future__ import annotations

KEEP_SCHEDULE = "keep model's"


def txt2vid(motion_file: str | None = None, *, frames: int = 8, size: int = 64, steps: int = 2, seed: int = 0,
            sampler: str = "gif", motion_scale: float = 1.0, beta_schedule: str = KEEP_SCHEDULE,
            groupnorm: str = "per-frame", topology: str = "sd15", denoise: float = 1.0, save: dict | None = None,
            capture_key: str = "latent") -> dict:
    """Tiny checkpoint → (motion model) → sampler → capture latent; optional decode + save animation."""
    prompt = {
        "ckpt": {"class_type": "Pix2GifTest_TinyCheckpoint", "inputs": {"seed": 0, "topology": topology}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat walking", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
    }
    model = ["ckpt", 0]
    if motion_file is not None:
        prompt["load_mm"] = {"class_type": "Pix2Gif_LoadMotionModel",
                             "inputs": {"model_name": motion_file, "version": "auto"}}
        prompt["apply_mm"] = {"class_type": "Pix2Gif_ApplyMotionModel",
                              "inputs": {"model": model, "motion_model": ["load_mm", 0], "motion_scale": motion_scale,
                                         "beta_schedule": beta_schedule, "groupnorm": groupnorm}}
        model = ["apply_mm", 0]
    common = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "seed": seed, "steps": steps,
              "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": denoise}
    if sampler == "gif":
        prompt["sample"] = {"class_type": "Pix2Gif_GifSampler",
                            "inputs": {**common, "frames": frames, "width": size, "height": size}}
    elif sampler == "custom":
        prompt["empty"] = {"class_type": "EmptyLatentImage",
                           "inputs": {"width": size, "height": size, "batch_size": frames}}
        prompt["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
        prompt["sigmas"] = {"class_type": "BasicScheduler",
                            "inputs": {"model": model, "scheduler": "normal", "steps": steps, "denoise": denoise}}
        prompt["sample"] = {"class_type": "SamplerCustom",
                            "inputs": {"model": model, "add_noise": True, "noise_seed": seed, "cfg": 7.0,
                                       "positive": ["pos", 0], "negative": ["neg", 0], "sampler": ["select", 0],
                                       "sigmas": ["sigmas", 0], "latent_image": ["empty", 0]}}
    else:
        prompt["empty"] = {"class_type": "EmptyLatentImage",
                           "inputs": {"width": size, "height": size, "batch_size": frames}}
        prompt["sample"] = {"class_type": "KSampler", "inputs": {**common, "latent_image": ["empty", 0]}}
    prompt["capture"] = {"class_type": "Pix2GifTest_CaptureLatent",
                         "inputs": {"samples": ["sample", 0], "key": capture_key}}
    if save is not None:
        prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
        prompt["capture_image"] = {"class_type": "Pix2GifTest_CaptureImage",
                                   "inputs": {"images": ["decode", 0], "key": "frames"}}
        prompt["save"] = {"class_type": "Pix2Gif_SaveAnimation", "inputs": {"images": ["decode", 0], **save}}
    return prompt
