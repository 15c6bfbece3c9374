"""Integration tests: our nodes executed by a real ComfyUI host's own executor, headless, on CPU.

The host is chosen by ``PIX2GIF_HOST``: "2024-03", "0.3.75" or "0.33.0" (trees installed by ``.ci/setup``), or the
path of another ComfyUI tree; one host per pytest process, because every ComfyUI version owns the same top-level
module names.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR / "harness"))
import comfy_host  # noqa: E402

TEST_NODES_DIR = TESTS_DIR / "harness" / "custom_nodes"


def fixture_module(name: str):
    """A module of tests/fixtures, imported by path (``tests`` is no package; ComfyUI trees have their own)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS_DIR / "fixtures" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> comfy_host.Host:
    workdir = tmp_path_factory.mktemp("comfy")
    booted = comfy_host.start(os.environ.get("PIX2GIF_HOST", "0.3.75"), workdir, (TEST_NODES_DIR,))
    # the repo root goes LAST on sys.path: fixtures import pix2gif_core from it, and ComfyUI's own `nodes`
    # module (already imported) must keep winning over our nodes/ folder.
    sys.path.append(str(TESTS_DIR.parent))
    return booted


@pytest.fixture(scope="session")
def pack(host):
    """The pack's top-level module as the host imported it (its name differs between host versions)."""
    import nodes

    return sys.modules[nodes.NODE_CLASS_MAPPINGS["Pix2Gif_ApplyMotionModel"].__module__.rsplit(".nodes", 1)[0]]


@pytest.fixture(scope="session")
def test_nodes(host):
    import nodes

    return sys.modules[nodes.NODE_CLASS_MAPPINGS["Pix2GifTest_TinyCheckpoint"].__module__]


@pytest.fixture(scope="session")
def motion_files(host, tmp_path_factory) -> dict[str, str]:
    """Tiny motion modules in every official layout, registered in models/animatediff_models.

    Keys: "<version>.<layout>" with layout ckpt (state_dict wrapper + config + module. prefix), plain.ckpt,
    safetensors, nope.safetensors (no position-encoding tensors); plus "v3.zero" (proj_out zero, official init).
    """
    import folder_paths

    mc = fixture_module("motion_checkpoints")

    folder = tmp_path_factory.mktemp("animatediff_models")
    files = {}
    for version in ("v1", "v2", "v3"):
        state = mc.make_motion_state_dict(version, seed=1)
        files[f"{version}.ckpt"] = f"tiny_{version}.ckpt"
        mc.write_ckpt(folder / files[f"{version}.ckpt"], state)
        files[f"{version}.plain.ckpt"] = f"tiny_{version}_plain.ckpt"
        mc.write_ckpt(folder / files[f"{version}.plain.ckpt"], state, wrap_state_dict=False, add_config=False,
                      module_prefix=False)
        files[f"{version}.safetensors"] = f"tiny_{version}.safetensors"
        mc.write_safetensors(folder / files[f"{version}.safetensors"], state)
    files["v2.nope.safetensors"] = "tiny_v2_nope.safetensors"
    mc.write_safetensors(folder / files["v2.nope.safetensors"], mc.make_motion_state_dict("v2", seed=1, with_pe=False))
    files["v3.zero"] = "tiny_v3_zero.safetensors"
    mc.write_safetensors(folder / files["v3.zero"], mc.make_motion_state_dict("v3", seed=2, zero_proj_out=True))
    files["sdxl"] = "tiny_sdxl_like.safetensors"
    mc.write_safetensors(folder / files["sdxl"], mc.make_sdxl_like_state_dict())
    files["code"] = "evil.ckpt"
    mc.write_pickle_with_code(folder / files["code"])
    folder_paths.add_model_folder_path("animatediff_models", str(folder))
    return files


#: the image-latent branches of the I2VGen-XL UNet (their last layers), and its CLIP-image context embedding
I2VGEN_LATENT_BRANCHES = ("image_latents_proj_in.4", "image_latents_context_embedding.5")
I2VGEN_CLIP_BRANCH = ("context_embedding.2",)


@pytest.fixture(scope="session")
def i2vgen_unet_files(host, tmp_path_factory) -> str:
    """Tiny I2VGen-XL UNets (diffusers single files) in a registered diffusion-models folder: ``tiny_i2vgen_xl``,
    ``…_no_latent`` (image-latent branches zeroed), ``…_no_image`` (those and the CLIP-image path zeroed), and
    ``sd15_unet`` (an SD1.5 key); returns the folder."""
    import folder_paths
    import safetensors.torch
    import torch

    weights = fixture_module("i2vgen_xl_weights")
    folder = tmp_path_factory.mktemp("diffusion_models")
    weights.write_tiny_unet_file(str(folder / "tiny_i2vgen_xl.safetensors"))
    weights.write_tiny_unet_file(str(folder / "tiny_i2vgen_xl_no_latent.safetensors"), zeroed=I2VGEN_LATENT_BRANCHES)
    weights.write_tiny_unet_file(str(folder / "tiny_i2vgen_xl_no_image.safetensors"),
                                 zeroed=I2VGEN_LATENT_BRANCHES + I2VGEN_CLIP_BRANCH)
    safetensors.torch.save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)},
                                str(folder / "sd15_unet.safetensors"))
    unet_folder = "diffusion_models" if "diffusion_models" in folder_paths.folder_names_and_paths else "unet"
    folder_paths.add_model_folder_path(unet_folder, str(folder))
    return str(folder)
