"""Convert a ComfyUI UI-format workflow (what the browser saves and the template browser loads) into the API
prompt the executor runs, using the live node definitions of a booted host to name widget values."""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")  # COMBO: V3 nodes' combo spec
#: nodes that only the front end knows (they never reach the executor)
FRONT_END_ONLY = ("Note", "MarkdownNote")
SEED_NAMES = ("seed", "noise_seed")


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def _takes_control_value(name: str, spec) -> bool:
    """The front end adds a 'control after generate' value after seed-like INT widgets."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (name in SEED_NAMES or options.get("control_after_generate", False))


def to_prompt(workflow: dict, node_classes: dict) -> dict:
    """API prompt ``{id: {"class_type", "inputs"}}`` for the active nodes of a UI workflow."""
    links = {link[0]: link for link in workflow["links"]}  # [id, from_node, from_slot, to_node, to_slot, type]
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0 or node["type"] in FRONT_END_ONLY:  # muted, bypassed, or a note
            continue
        definition = node_classes[node["type"]].INPUT_TYPES()
        specs = {**definition.get("required", {}), **definition.get("optional", {})}
        linked = {slot["name"]: links[slot["link"]] for slot in node.get("inputs", []) if slot.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec in specs.items():
            if _is_widget(spec) and values:
                inputs[name] = values.pop(0)
                if _takes_control_value(name, spec) and values:
                    values.pop(0)
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def load(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


TINY_SIZE = 64
TINY_STEPS = 4
TINY_MOTION_FILE = "tiny_v3.safetensors"
TINY_PIX2GIF_FILE = "tiny_pix2gif.ckpt"
TINY_EMBEDDINGS_FILE = "tiny_v3_motion.safetensors"
TINY_FOLLOW_YOUR_CLICK_FILE = "tiny_follow_your_click.safetensors"
TINY_SAM_FOLDER = "tiny_workflow_sam"
#: random tiny SAMs draw speckled masks; with this seed the bundled clicks on the sample image leave a third of its
#: latent cells outside the mask (seeds 0, 2, 3 and 5 cover every cell)
TINY_SAM_SEED = 4
#: motion modules of the tiny v3 motion model (tests/fixtures/motion_checkpoints.py) that tiny embeddings use → C
TINY_EMBEDDING_MODULES = {"down_blocks.2.motion_modules.1": 128, "up_blocks.1.motion_modules.0": 128}
EMBEDDING_NODES = ("Pix2Gif_LoadMotionEmbeddings", "Pix2Gif_SaveMotionEmbeddings", "Pix2Gif_TrainMotionEmbeddings")


def _fixture(name: str):
    import importlib.util

    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "fixtures" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def write_tiny_pix2gif(path: Path, seed: int = 0) -> Path:
    """A tiny Pix2Gif training checkpoint (exact Lightning layout) built from the test pack's tiny ComfyUI parts.

    Needs the test-only custom nodes loaded and the repository root on sys.path.
    """
    import nodes

    test_pack = sys.modules[nodes.NODE_CLASS_MAPPINGS["Pix2GifTest_TinyCheckpoint"].__module__]
    fixtures = _fixture("pix2gif_checkpoints")
    path.parent.mkdir(parents=True, exist_ok=True)
    return fixtures.write_lightning_ckpt(path, fixtures.make_pix2gif_state_dict(*test_pack.tiny_pix2gif_parts(seed),
                                                                                seed=seed))


def use_tiny_models(prompt: dict, motion_dir: Path) -> None:
    """Swap real model loaders for the tiny test models and shrink sizes/steps so ``prompt`` runs on a CPU.

    A Pix2Gif checkpoint name becomes a tiny Pix2Gif file written next to ``motion_dir`` (in ``checkpoints/``,
    registered with the host), a Follow-Your-Click one a tiny file in the official layout (``follow_your_click/``),
    a SAM name a tiny random SAM folder (``sams/``); motion embeddings are read from and saved to
    ``motion_embeddings/`` next to it, where a motion-embeddings file name becomes tiny random embeddings for the
    tiny motion model. Needs the test-only custom nodes (tests/harness/custom_nodes) loaded and the repository root
    on sys.path.
    The I2VGen-XL loaders get tiny parts (:func:`_use_tiny_i2vgen_xl`).
    """
    motion_dir.mkdir(parents=True, exist_ok=True)
    fixtures = _fixture("motion_checkpoints")
    fixtures.write_safetensors(motion_dir / TINY_MOTION_FILE, fixtures.make_motion_state_dict("v3", seed=1))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            node["class_type"] = "Pix2GifTest_TinyCheckpoint"
            node["inputs"] = {"seed": 0, "topology": "sd15"}
        elif node["class_type"] == "Pix2Gif_LoadMotionModel":
            inputs["model_name"] = TINY_MOTION_FILE
        elif node["class_type"] == "Pix2Gif_LoadPix2GifModel":
            inputs["ckpt_name"] = _tiny_file(motion_dir.parent, "checkpoints", TINY_PIX2GIF_FILE, write_tiny_pix2gif)
        elif node["class_type"] == "Pix2Gif_LoadFollowYourClickModel":
            inputs["ckpt_name"] = _tiny_file(motion_dir.parent, "follow_your_click", TINY_FOLLOW_YOUR_CLICK_FILE,
                                           _write_tiny_follow_your_click)
        elif node["class_type"] == "Pix2Gif_LoadSamModel":
            inputs["sam_name"] = _tiny_file(motion_dir.parent, "sams", TINY_SAM_FOLDER, _write_tiny_sam)
        if node["class_type"] in EMBEDDING_NODES:
            use_embeddings_folder(motion_dir.parent / "motion_embeddings")
        if node["class_type"] == "Pix2Gif_LoadMotionEmbeddings":
            inputs["embeddings_name"] = _tiny_embeddings_file(motion_dir.parent / "motion_embeddings")
        for key in ("width", "height"):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = TINY_SIZE
        if "steps" in inputs and not isinstance(inputs["steps"], list):
            inputs["steps"] = min(inputs["steps"], TINY_STEPS)
        _use_tiny_i2vgen_xl(node, motion_dir.parent)


def _write_tiny_follow_your_click(path: Path) -> None:
    """A tiny Follow-Your-Click checkpoint (official layout) for the tiny checkpoint's UNet (seed 0, as the swapped
    Load Checkpoint gives)."""
    import comfy.utils
    import nodes

    test_pack = sys.modules[nodes.NODE_CLASS_MAPPINGS["Pix2GifTest_TinyCheckpoint"].__module__]
    model = test_pack.build_model(0)
    checkpoints = _fixture("follow_your_click_checkpoints")
    checkpoints.write_safetensors(path, checkpoints.make_follow_your_click_state_dict(
        model.model.diffusion_model.state_dict(), comfy.utils.unet_to_diffusers(model.model.model_config.unet_config),
        _fixture("motion_checkpoints").make_motion_state_dict("v1", seed=1)))


def _write_tiny_sam(path: Path) -> None:
    """A tiny random SAM in the Hugging Face layout (a folder)."""
    _fixture("sam_models").write_tiny_sam(path, seed=TINY_SAM_SEED)


def tiny_motion_embeddings(seed: int = 0, *, frames: int = 16, version: str = "v3", scale: float = 0.5,
                           modules: dict[str, int] = TINY_EMBEDDING_MODULES):
    """Random motion embeddings (both attentions of ``modules``, query/key and value) for the tiny motion model at
    ``TINY_SIZE``. Needs the repository root on sys.path."""
    import torch
    from pix2gif_core.motion_inversion.embeddings import LayerEmbedding, MotionEmbeddings, sd15_layer_specs

    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for spec in sd15_layer_specs(modules, (TINY_SIZE // 8, TINY_SIZE // 8), "all"):
        positions = spec.token_hw[0] * spec.token_hw[1]
        layers[spec.name] = LayerEmbedding(torch.randn(1, frames, spec.channels, generator=generator) * scale,
                                           torch.randn(positions, frames, spec.channels, generator=generator) * scale,
                                           spec.token_hw)
    return MotionEmbeddings(layers, frames, (TINY_SIZE, TINY_SIZE), version, {"source": f"tiny test seed {seed}"})


def use_embeddings_folder(folder: Path) -> None:
    """Make ``folder`` the first ``motion_embeddings`` folder: the one the embedding nodes save into."""
    import folder_paths

    folder.mkdir(parents=True, exist_ok=True)
    paths, extensions = folder_paths.folder_names_and_paths["motion_embeddings"]
    folder_paths.folder_names_and_paths["motion_embeddings"] = (
        [str(folder), *(path for path in paths if path != str(folder))], extensions)


def _tiny_embeddings_file(folder: Path) -> str:
    """Write (once per folder) tiny random motion embeddings for the tiny motion model into ``folder``."""
    from pix2gif_core.motion_inversion.embeddings import save_motion_embeddings

    if not (folder / TINY_EMBEDDINGS_FILE).is_file():
        save_motion_embeddings(tiny_motion_embeddings(), folder / TINY_EMBEDDINGS_FILE)
    return TINY_EMBEDDINGS_FILE


TINY_I2VGEN_XL_UNET_FILE = "tiny_i2vgen_xl.safetensors"
TINY_VAE_FILE = "tiny_taesd.safetensors"
#: I2VGen-XL Refine's tiny target width: wider than TINY_SIZE, so the bundled cascade resizes the clip
TINY_REFINED_WIDTH = 96


def _use_tiny_i2vgen_xl(node: dict, models: Path) -> None:
    """The I2VGen-XL workflows' loaders with tiny parts as wide as each other (64): the UNet (diffusers single file,
    real key layout) and a TAESD VAE written into ``models/diffusion_models`` and ``models/vae`` on demand and read
    by the real loaders; the text encoder and CLIP vision from the test nodes (ComfyUI's CLIPLoader and
    CLIPVisionLoader only build full-size ViT-L/H/G configs). Refine re-samples at TINY_REFINED_WIDTH × TINY_SIZE."""
    kind, inputs = node["class_type"], node["inputs"]
    if kind == "Pix2Gif_LoadI2VGenXLModel":
        inputs["unet_name"] = _tiny_file(models, _unet_folder(), TINY_I2VGEN_XL_UNET_FILE, _write_tiny_unet)
    elif kind == "VAELoader":
        inputs["vae_name"] = _tiny_file(models, "vae", TINY_VAE_FILE, _write_tiny_vae)
    elif kind == "CLIPLoader":
        node["class_type"], node["inputs"] = "Pix2GifTest_TinyCLIP", {"seed": 1}
    elif kind == "CLIPVisionLoader":
        node["class_type"], node["inputs"] = "Pix2GifTest_TinyCLIPVision", {"projection_dim": 64, "seed": 5}
    elif kind == "Pix2Gif_I2VGenXLRefine":
        inputs["width"] = TINY_REFINED_WIDTH


def _unet_folder() -> str:
    import folder_paths

    return "diffusion_models" if "diffusion_models" in folder_paths.folder_names_and_paths else "unet"


def _tiny_file(models: Path, kind: str, name: str, write) -> str:
    """``models/<kind>/<name>`` (a file, or a folder such as a SAM's), written by ``write(path)`` once and its
    folder registered as a ``kind`` folder."""
    import folder_paths

    folder = models / kind
    if not (folder / name).exists():
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / name)
    if str(folder) not in folder_paths.get_folder_paths(kind):
        folder_paths.add_model_folder_path(kind, str(folder))
    return name


def _write_tiny_unet(path: Path) -> None:
    _fixture("i2vgen_xl_weights").write_tiny_unet_file(str(path))


def _write_tiny_vae(path: Path) -> None:
    """The test pack's tiny TAESD (random weights, the tiny checkpoint's VAE) as a VAE file."""
    import nodes
    import safetensors.torch

    test_pack = sys.modules[nodes.NODE_CLASS_MAPPINGS["Pix2GifTest_TinyCheckpoint"].__module__]
    state = test_pack.tiny_vae_state(seed=2)
    safetensors.torch.save_file({key: value.contiguous() for key, value in state.items()}, str(path))
