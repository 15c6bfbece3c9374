"""Nodes: apply, combine, save and load Motion-Inversion motion embeddings; the DDIM-inverted noise prior.

Embeddings live in ``models/motion_embeddings`` as ``.safetensors`` (``pix2gif_core.motion_inversion.embeddings``) and
travel between nodes as :class:`MotionEmbeddings` (ComfyUI type ``PIX2GIF_MOTION_EMBEDDINGS``). They act through
a motion-patched MODEL: *Apply Motion Embeddings* adds a temporal-variant provider that builds, before every
UNet call, the embedding attention of each selected motion module for the latent size being sampled.

Where the embedding nodes and the training node need the model itself they go through ComfyUI's own sampling
(:func:`.sampling_session.run_in_sampling`): model management, object patches, conditioning, wrappers and hooks
are the sampler's.
"""
from __future__ import annotations

import math
import os
import re

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..pix2gif_core.diffusion.ddim_inversion import ddim_invert
from ..pix2gif_core.errors import Pix2GifInputError
from ..pix2gif_core.motion_inversion.embeddings import (MODES, RESOLUTION_POLICIES, ApplyOptions, MotionEmbeddingPatch,
                                              MotionEmbeddings, combine, compatibility_error,
                                              load_motion_embeddings, save_motion_embeddings)
from ..pix2gif_core.animatediff.motion_module import MotionModule
from ..pix2gif_core.motion_inversion.noise_prior import DEFAULT_NOISE_PRIOR, blend_noise_prior, noise_prior_weights
from . import model_folders
from .conventions import category, display_name, input_error, node_id, path_inside, reported_as
from .animatediff_injection import add_temporal_variant_provider, injected_motion_modules, motion_placement
from .sampling_session import Denoiser, run_in_sampling, sampler_sigmas

MOTION_EMBEDDINGS_TYPE = "PIX2GIF_MOTION_EMBEDDINGS"
CATEGORY = category("Motion Inversion")
FILE_SUFFIX = ".safetensors"
LATENT_SCALE = 8  # SD1.5 VAE: one latent cell per 8×8 pixels
COMBINED_INPUTS = 4


# ---------------------------------------------------------------------------------------------------------------
# Shared with the training node


def motion_modules(model) -> dict[str, MotionModule]:
    """Motion-module name → module of a motion-patched MODEL (clear error when the MODEL carries none)."""
    return {name: injected.module for name, injected in injected_motion_modules(model).items()}


def loaded_noise_schedule(model):
    """Load ``model`` (ComfyUI model management) and return its noise schedule as its samplers see it: while
    loaded, the MODEL's object patches – e.g. the motion model's beta schedule – are applied to ``model.model``."""
    comfy.model_management.load_models_gpu([model])
    return model.model.model_sampling


def embeddings_file(filename_prefix: str, node_title: str, suffix: str | None = None) -> str:
    """``models/motion_embeddings/<prefix>_<suffix>.safetensors`` (the prefix may hold subfolders, created here);
    without ``suffix`` the next free 5-digit counter. A prefix that leaves the folder is refused."""
    folder = os.path.realpath(model_folders.folders(model_folders.MOTION_EMBEDDINGS)[0])
    target = os.path.realpath(os.path.join(folder, filename_prefix))
    if os.path.isabs(filename_prefix) or target == folder or not path_inside(folder, target):
        raise input_error(node_title, f"filename_prefix '{filename_prefix}' does not name a file inside {folder}; "
                                      "use a relative name such as 'motion_inversion/zoom'")
    directory, name = os.path.split(target)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise input_error(node_title, f"cannot create the folder '{directory}' ({err.strerror or err}); free space "
                                      "or choose another folder") from err
    if suffix is None:
        numbered = re.compile(rf"{re.escape(name)}_(\d{{5}}){re.escape(FILE_SUFFIX)}")
        taken = [int(match[1]) for entry in os.listdir(directory) if (match := numbered.fullmatch(entry))]
        suffix = f"{max(taken, default=0) + 1:05}"
    return os.path.join(directory, f"{name}_{suffix}{FILE_SUFFIX}")


# ---------------------------------------------------------------------------------------------------------------
# Apply


class ReportedVariants:
    """Temporal-variant provider that names the apply node (and the sizes) when the embeddings refuse a latent."""

    def __init__(self, patch: MotionEmbeddingPatch, node_title: str):
        self.patch = patch
        self.node_title = node_title

    def __call__(self, latent_hw: tuple[int, int]) -> dict:
        try:
            return self.patch.variants(latent_hw)
        except Pix2GifInputError as err:
            (trained_h, trained_w), (h, w) = self.patch.embeddings.pixel_hw, latent_hw
            raise input_error(self.node_title, f"resolution '{self.patch.options.resolution_policy}': the motion "
                                               f"embeddings were trained at {trained_w}×{trained_h} px, this "
                                               f"latent is {w * LATENT_SCALE}×{h * LATENT_SCALE} px. {err}") from None


class ApplyMotionEmbeddings:
    TITLE = "Apply Motion Embeddings"
    DESCRIPTION = ("Animates a motion-patched MODEL with a learned motion: the embeddings join the temporal "
                   "attention of their motion modules. Zero embeddings or strength 0 leave AnimateDiff as it is.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A MODEL from Apply Motion Model, with the motion module the "
                                           "embeddings were trained on"}),
            "motion_embeddings": (MOTION_EMBEDDINGS_TYPE,),
            "mode": (list(MODES), {"default": "as_trained",
                                   "tooltip": "as_trained: both embeddings; camera: query/key embedding only (global "
                                              "motion, less of the reference's look); object: value embedding "
                                              "replaced by its frame-to-frame differences"}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Multiplies the embeddings; 0 = plain AnimateDiff"}),
            "resolution": (list(RESOLUTION_POLICIES), {"default": "interpolate",
                                                       "tooltip": "Another size than trained: interpolate the value "
                                                                  "embedding over the token grid, or refuse to "
                                                                  "sample"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    def apply(self, model, motion_embeddings: MotionEmbeddings, mode, strength, resolution):
        with reported_as(self.TITLE):
            version = motion_placement(model).version
            modules = motion_modules(model)
            problem = compatibility_error(motion_embeddings, version,
                                          {name: module.channels for name, module in modules.items()})
            if problem:
                raise Pix2GifInputError(f"motion_embeddings: {problem}.")
            patch = MotionEmbeddingPatch(motion_embeddings, modules, ApplyOptions(mode, strength, resolution))
        return (add_temporal_variant_provider(model, ReportedVariants(patch, self.TITLE)),)


# ---------------------------------------------------------------------------------------------------------------
# Arithmetic and files


class CombineMotionEmbeddings:
    TITLE = "Combine Motion Embeddings"
    DESCRIPTION = ("Weighted sum w1·E1 + w2·E2 + … of motion embeddings trained on the same motion module, layers, "
                   "frame count and size (e.g. 1·zoom + 0.5·pan, or 1·A − 1·B).")

    @classmethod
    def INPUT_TYPES(cls):
        weights = {f"weight_{k}": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                             "tooltip": f"Weight of embeddings_{k} (negative subtracts)"})
                   for k in range(1, COMBINED_INPUTS + 1)}
        return {"required": {"embeddings_1": (MOTION_EMBEDDINGS_TYPE,), **weights},
                "optional": {f"embeddings_{k}": (MOTION_EMBEDDINGS_TYPE,) for k in range(2, COMBINED_INPUTS + 1)}}

    RETURN_TYPES = (MOTION_EMBEDDINGS_TYPE,)
    RETURN_NAMES = ("motion_embeddings",)
    FUNCTION = "combine"
    CATEGORY = CATEGORY

    def combine(self, embeddings_1: MotionEmbeddings, **inputs):
        terms = [(inputs["weight_1"], embeddings_1)]
        for k in range(2, COMBINED_INPUTS + 1):
            embeddings = inputs.get(f"embeddings_{k}")
            if embeddings is None:
                continue
            problem = embeddings_1.mismatch(embeddings)
            if problem:
                raise input_error(self.TITLE, f"embeddings_{k} cannot be added to embeddings_1: {problem}. Only "
                                              "embeddings trained on the same motion module, layers, frame count "
                                              "and size combine")
            terms.append((inputs[f"weight_{k}"], embeddings))
        with reported_as(self.TITLE):
            return (combine(terms),)


class SaveMotionEmbeddings:
    TITLE = "Save Motion Embeddings"
    DESCRIPTION = ("Writes motion embeddings to models/motion_embeddings/<prefix>_<counter>.safetensors with their "
                   "metadata (layers, frames, size, motion-module version, training settings).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "motion_embeddings": (MOTION_EMBEDDINGS_TYPE,),
            "filename_prefix": ("STRING", {"default": "motion_inversion/motion",
                                           "tooltip": "May contain subfolders inside models/motion_embeddings"}),
        }}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    def save(self, motion_embeddings: MotionEmbeddings, filename_prefix):
        path = embeddings_file(filename_prefix, self.TITLE)
        with reported_as(self.TITLE):
            save_motion_embeddings(motion_embeddings, path)
        folder = model_folders.folders(model_folders.MOTION_EMBEDDINGS)[0]
        return {"ui": {"text": [os.path.relpath(path, folder)]}}


class LoadMotionEmbeddings:
    TITLE = "Load Motion Embeddings"
    DESCRIPTION = "Loads motion embeddings saved by Save Motion Embeddings (or shared by others) for Apply or Combine."

    @staticmethod
    def nothing_to_load() -> str:
        """What to do when models/motion_embeddings is empty, naming its folders."""
        return ("no motion embeddings found. Train some with 'Train Motion Embeddings' + 'Save Motion Embeddings', "
                "or put .safetensors motion embeddings into "
                + " or ".join(model_folders.folders(model_folders.MOTION_EMBEDDINGS)) + ", and press Refresh")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"embeddings_name": (model_folders.files(model_folders.MOTION_EMBEDDINGS),
                                                 {"tooltip": "File in models/motion_embeddings"})}}

    RETURN_TYPES = (MOTION_EMBEDDINGS_TYPE,)
    RETURN_NAMES = ("motion_embeddings",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, embeddings_name):
        return model_folders.choice_error(model_folders.MOTION_EMBEDDINGS, embeddings_name, "embeddings_name",
                                          cls.TITLE, cls.nothing_to_load) or True

    def load(self, embeddings_name):
        path = model_folders.chosen_path(model_folders.MOTION_EMBEDDINGS, embeddings_name, self.TITLE,
                                         self.nothing_to_load)
        with reported_as(self.TITLE):
            return (load_motion_embeddings(path),)


# ---------------------------------------------------------------------------------------------------------------
# Noise prior


def start_noise_scale(model_sampling, sigma: float) -> float:
    """k with ``x_start = latent + k·noise``: ComfyUI's ``noise_scaling`` at the first level of a schedule. It uses
    √(1+σ²) when the schedule starts at the model's σ_max (``KSAMPLER.max_denoise``), σ otherwise."""
    sigma_max = float(model_sampling.sigma_max)
    max_denoise = math.isclose(sigma_max, sigma, rel_tol=1e-05) or sigma > sigma_max
    return float(model_sampling.noise_scaling(torch.tensor([sigma]), torch.ones(1), torch.zeros(1), max_denoise))


class MotionNoisePrior:
    TITLE = "Motion Noise Prior"
    DESCRIPTION = ("Start noise that carries the reference clip's motion: its latents DDIM-inverted to the highest "
                   "noise level, blended with fresh seeded noise (Motion Inversion: √0.5 / √0.5). Connect it to "
                   "the GIF Sampler's `noise` input (text to video, denoise 1, same frames and size).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "Plain or motion-patched; use the MODEL you sample with"}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt used while inverting (no CFG)"}),
            "reference": ("LATENT", {"tooltip": "The reference clip's latents (VAE Encode of its frames)"}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "DDIM inversion steps"}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal",
                                                               "tooltip": "Same as the GIF Sampler's"}),
            "prior_weight": ("FLOAT", {"default": DEFAULT_NOISE_PRIOR, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "p: √p · inverted + √(1−p) · fresh noise (unit variance); "
                                                  "0 = the seed's noise alone, 1 = the inverted clip alone"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Fresh noise: the same as the GIF Sampler draws for this seed"}),
        }}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("noise",)
    FUNCTION = "prior"
    CATEGORY = CATEGORY

    def prior(self, model, positive, reference, steps, scheduler, prior_weight, seed):
        latent = reference["samples"]
        if latent.shape[0] < 2:
            raise input_error(self.TITLE, f"reference holds {latent.shape[0]} frame; encode the reference clip "
                                          "(2 frames or more) with VAE Encode")
        with reported_as(self.TITLE):
            weights = noise_prior_weights(prior_weight)
            model_sampling = loaded_noise_schedule(model)
            sigmas = sampler_sigmas(model, steps, "euler", scheduler, 1.0)
            progress = comfy.utils.ProgressBar(len(sigmas) - 1)

            def invert(denoise: Denoiser, x0: torch.Tensor) -> torch.Tensor:
                return ddim_invert(x0, sigmas.to(x0.device), denoise,
                                   progress=lambda done, total: progress.update_absolute(done, total),
                                   check_cancel=comfy.model_management.throw_exception_if_processing_interrupted)[0]

            inverted = run_in_sampling(model, positive, latent, sigmas, invert)
            # The sampler starts from zeros + k·noise (text to video): this noise starts it at the inverted latent.
            inverted_noise = inverted.float().cpu() / start_noise_scale(model_sampling, float(sigmas[0]))
            fresh = comfy.sample.prepare_noise(latent, seed)
            return ({"samples": blend_noise_prior(inverted_noise, fresh, *weights)},)


NODE_CLASSES = {node_id("ApplyMotionEmbeddings"): ApplyMotionEmbeddings,
                node_id("CombineMotionEmbeddings"): CombineMotionEmbeddings,
                node_id("SaveMotionEmbeddings"): SaveMotionEmbeddings,
                node_id("LoadMotionEmbeddings"): LoadMotionEmbeddings,
                node_id("MotionNoisePrior"): MotionNoisePrior}
NODE_DISPLAY_NAMES = {key: display_name(cls.TITLE) for key, cls in NODE_CLASSES.items()}
