"""Nodes: load an AnimateDiff motion model from ``models/animatediff_models`` and apply it to an SD1.5 MODEL."""
from __future__ import annotations

from ..pix2gif_core.animatediff.checkpoint import load_motion_module_set
from . import model_folders
from .conventions import category, display_name, node_id, reported_as
from .animatediff_injection import LoadedMotionModel, inject

MOTION_MODEL_TYPE = "PIX2GIF_MOTION_MODEL"
VERSIONS = ("auto", "v1", "v2", "v3")
#: choice shown to the user → noise_schedule name (None keeps the MODEL's own schedule)
BETA_SCHEDULES = {"sqrt_linear (AnimateDiff)": "sqrt_linear", "linear (SD1.5)": "linear", "keep model's": None}
GROUPNORM_MODES = ("auto (v1 only)", "cross-frame", "per-frame")


def _missing_models_message() -> str:
    where = " or ".join(model_folders.folders(model_folders.MOTION_MODELS))
    return (f"no motion model found. Put an AnimateDiff SD1.5 motion module (e.g. mm_sd_v15_v2.ckpt or "
            f"v3_sd15_mm.ckpt) into {where} and press Refresh")


class LoadMotionModel:
    TITLE = "Load Motion Model"
    DESCRIPTION = "Loads an AnimateDiff motion module (v1, v2, v3; .ckpt or .safetensors) for SD1.5."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (model_folders.files(model_folders.MOTION_MODELS),
                           {"tooltip": "File in models/animatediff_models"}),
            "version": (list(VERSIONS), {"default": "auto",
                                         "tooltip": "auto: mid block ⇒ v2; position-encoding length 32 or none ⇒ "
                                                    "v3; other lengths ⇒ v1"}),
        }}

    RETURN_TYPES = (MOTION_MODEL_TYPE,)
    RETURN_NAMES = ("motion_model",)
    FUNCTION = "load"
    CATEGORY = category("AnimateDiff")

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return model_folders.choice_error(model_folders.MOTION_MODELS, model_name, "model_name", cls.TITLE,
                                          _missing_models_message) or True

    def load(self, model_name, version):
        path = model_folders.chosen_path(model_folders.MOTION_MODELS, model_name, self.TITLE, _missing_models_message)
        with reported_as(self.TITLE):
            modules = load_motion_module_set(path, None if version == "auto" else version)
        return (LoadedMotionModel(model_name, modules),)


class ApplyMotionModel:
    TITLE = "Apply Motion Model"
    DESCRIPTION = ("Returns a copy of MODEL that animates: the motion modules run after each SD1.5 UNet block "
                   "on the latent batch as one video. Works with KSampler, SamplerCustom and the GIF sampler.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "motion_model": (MOTION_MODEL_TYPE,),
            "motion_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Multiplies temporal-attention keys: >1 sharper, <1 softer "
                                                  "frame-to-frame attention (1 = as trained)"}),
            "beta_schedule": (list(BETA_SCHEDULES), {"default": "sqrt_linear (AnimateDiff)",
                                               "tooltip": "AnimateDiff was trained with sqrt_linear betas"}),
            "groupnorm": (list(GROUPNORM_MODES), {"default": GROUPNORM_MODES[0],
                                                  "tooltip": "v1 modules were trained with GroupNorm statistics "
                                                             "shared across frames"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = category("AnimateDiff")

    def apply(self, model, motion_model: LoadedMotionModel, motion_scale, beta_schedule, groupnorm):
        cross_frame = {"cross-frame": True, "per-frame": False}.get(
            groupnorm, motion_model.modules.config.version == "v1")
        with reported_as(self.TITLE):
            patched = inject(model, motion_model, key_scale=motion_scale, cross_frame_groupnorm=cross_frame,
                             beta_schedule=BETA_SCHEDULES[beta_schedule])
        return (patched,)


NODE_CLASSES = {node_id("LoadMotionModel"): LoadMotionModel, node_id("ApplyMotionModel"): ApplyMotionModel}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
