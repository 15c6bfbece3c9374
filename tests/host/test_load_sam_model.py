"""Load SAM Model in a real host: what it lists in models/sams, original ``sam_vit_*`` checkpoints (written by the
fixture's own inverse name map) giving the Hugging Face folder's masks, SAM 2 folders against Sam2Model with the
official SAM 2 transforms, and files of other families refused naming node, input and file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

_spec = importlib.util.spec_from_file_location("sam_models", Path(__file__).resolve().parent.parent / "fixtures"
                                               / "sam_models.py")
sam_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sam_models)

OBJECTS_IMAGE = "sam_objects.png"
CLICKS = "[[18, 20, 1], [58, 26, 0]]"
HF_FOLDER, SAM2_FOLDER = "tiny_sam_hf", "tiny_sam2_hf"
ORIGINAL_PTH, ORIGINAL_SAFETENSORS = "sam_vit_tiny.pth", "sam_vit_tiny.safetensors"
SD_FILE = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture(scope="module")
def sams_root(host, tmp_path_factory) -> Path:
    """A registered models/sams folder with the same tiny SAM as a folder, a .pth and a .safetensors, a tiny SAM 2
    folder and a Stable Diffusion file dropped there by mistake; the two-objects photo in the input folder."""
    import folder_paths

    root = tmp_path_factory.mktemp("sams_models")
    sam_models.write_tiny_sam(root / HF_FOLDER, seed=3)
    from transformers import SamModel

    model = SamModel.from_pretrained(root / HF_FOLDER)
    sam_models.write_original_sam(root / ORIGINAL_PTH, model)
    sam_models.write_original_sam(root / ORIGINAL_SAFETENSORS, model)
    sam_models.write_tiny_sam2(root / SAM2_FOLDER, seed=4)
    safetensors.torch.save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
                                str(root / SD_FILE))
    folder_paths.add_model_folder_path("sams", str(root))
    Image.fromarray(sam_models.two_objects_image()).save(Path(folder_paths.get_input_directory()) / OBJECTS_IMAGE)
    return root


def host_mask(host, test_nodes, sam_name: str) -> torch.Tensor:
    result = host.run(sam_models.click_mask_prompt(sam_name, OBJECTS_IMAGE, CLICKS, "sam_mask"))
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["sam_mask"][0, ..., 0]


def test_lists_folders_and_checkpoint_files_not_the_files_inside_folders(host, sams_root):
    import nodes

    (choices, _), = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadSamModel"].INPUT_TYPES()["required"].values()
    for name in (HF_FOLDER, SAM2_FOLDER, ORIGINAL_PTH, ORIGINAL_SAFETENSORS, SD_FILE):
        assert name in choices
    assert not any(choice.startswith((f"{HF_FOLDER}/", f"{SAM2_FOLDER}/")) for choice in choices), choices


def test_original_checkpoints_give_the_hf_folders_mask(host, test_nodes, sams_root):
    logits, scores = sam_models.transformers_sam_logits(sams_root / HF_FOLDER, sam_models.two_objects_image(),
                                                        [[18, 20], [58, 26]], [1, 0])
    expected = (logits[int(scores.argmax())] > 0).float()
    assert 0 < expected.mean() < 1
    for name in (HF_FOLDER, ORIGINAL_PTH, ORIGINAL_SAFETENSORS):
        assert torch.equal(host_mask(host, test_nodes, name), expected), name


def test_sam2_folder_mask_is_sam2_models_own(host, test_nodes, sams_root):
    logits, scores = sam_models.sam2_reference_logits(sams_root / SAM2_FOLDER, sam_models.two_objects_image(),
                                                      [[18, 20], [58, 26]], [1, 0])
    expected = (logits[int(scores.argmax())] > 0).float()
    assert 0 < expected.mean() < 1
    assert torch.equal(host_mask(host, test_nodes, SAM2_FOLDER), expected)


def test_file_of_another_family_is_refused_naming_node_input_and_file(host, sams_root):
    result = host.run(sam_models.click_mask_prompt(SD_FILE, OBJECTS_IMAGE, CLICKS))
    assert not result.success
    message = result.error["exception_message"]
    assert f"[Load SAM Model] sam_name: '{SD_FILE}' is a Stable Diffusion checkpoint" in message
    assert "models/checkpoints" in message
