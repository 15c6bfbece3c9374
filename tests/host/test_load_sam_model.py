"""Load SAM Model in a real host: what it lists in models/sams, original ``sam_vit_*`` checkpoints (written by the
fixture's own inverse name map) giving the Hugging Face folder's masks, SAM 2 folders against Sam2Model with the
official SAM 2 transforms, and files of other families refused naming node, input and file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
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


def click_prompt(sam_name: str) -> dict:
    return {"image": {"class_type": "LoadImage", "inputs": {"image": OBJECTS_IMAGE}},
            "sam": {"class_type": "Pix2Gif_LoadSamModel", "inputs": {"sam_name": sam_name}},
            "click": {"class_type": "Pix2Gif_ClickMask",
                      "inputs": {"sam": ["sam", 0], "image": ["image", 0], "points": CLICKS,
                                 "mask_choice": "best score", "dilation": 0, "feather": 0}},
            "as_image": {"class_type": "MaskToImage", "inputs": {"mask": ["click", 0]}},
            "capture": {"class_type": "Pix2GifTest_CaptureImage", "inputs": {"images": ["as_image", 0],
                                                                             "key": "sam_mask"}}}


def host_mask(host, test_nodes, sam_name: str) -> torch.Tensor:
    result = host.run(click_prompt(sam_name))
    assert result.success, result.error or result.validation_error
    return test_nodes.CAPTURED["sam_mask"][0, ..., 0]


def test_lists_folders_and_checkpoint_files_not_the_files_inside_folders(host, sams_root):
    import nodes

    (choices, _), = nodes.NODE_CLASS_MAPPINGS["Pix2Gif_LoadSamModel"].INPUT_TYPES()["required"].values()
    for name in (HF_FOLDER, SAM2_FOLDER, ORIGINAL_PTH, ORIGINAL_SAFETENSORS, SD_FILE):
        assert name in choices
    assert not any(choice.startswith((f"{HF_FOLDER}/", f"{SAM2_FOLDER}/")) for choice in choices), choices


def test_original_checkpoints_give_the_hf_folders_mask(host, test_nodes, sams_root):
    from transformers import SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    model = SamModel.from_pretrained(sams_root / HF_FOLDER).eval()
    processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    inputs = processor(images=sam_models.two_objects_image(), input_points=[[[[18, 20], [58, 26]]]],
                       input_labels=[[[1, 0]]], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"], multimask_output=True)
    logits = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                          binarize=False)[0][0]
    expected = (logits[int(out.iou_scores[0, 0].argmax())] > 0).float()
    assert 0 < expected.mean() < 1
    for name in (HF_FOLDER, ORIGINAL_PTH, ORIGINAL_SAFETENSORS):
        assert torch.equal(host_mask(host, test_nodes, name), expected), name


def test_sam2_folder_mask_is_sam2_models_own(host, test_nodes, sams_root):
    """Reference: Sam2Model with the official SAM 2 transforms (ToTensor, Resize((S, S)), ImageNet Normalize; points
    × S / (W, H); logits bilinearly upsampled to the image)."""
    from transformers import Sam2Model

    model = Sam2Model.from_pretrained(sams_root / SAM2_FOLDER).eval()
    image = sam_models.two_objects_image()
    size = model.config.prompt_encoder_config.image_size
    pixels = F.interpolate(torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0, size=(size, size),
                           mode="bilinear", align_corners=False, antialias=True)
    pixels = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        3, 1, 1)
    points = torch.tensor([[18 * size / 80, 20 * size / 48], [58 * size / 80, 26 * size / 48]])
    with torch.no_grad():
        out = model(pixel_values=pixels, input_points=points.view(1, 1, 2, 2),
                    input_labels=torch.tensor([[[1, 0]]]), multimask_output=True)
    logits = F.interpolate(out.pred_masks[0], size=(48, 80), mode="bilinear", align_corners=False)[0]
    expected = (logits[int(out.iou_scores[0, 0].argmax())] > 0).float()
    assert 0 < expected.mean() < 1
    assert torch.equal(host_mask(host, test_nodes, SAM2_FOLDER), expected)


def test_file_of_another_family_is_refused_naming_node_input_and_file(host, sams_root):
    result = host.run(click_prompt(SD_FILE))
    assert not result.success
    message = result.error["exception_message"]
    assert f"[Load SAM Model] sam_name: '{SD_FILE}' is a Stable Diffusion checkpoint" in message
    assert "models/checkpoints" in message
