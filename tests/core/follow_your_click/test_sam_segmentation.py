"""Click → mask against transformers' own SAM pipeline called directly (processor, model, post_process_masks)."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.click_points import parse_clicks
from pix2gif_core.follow_your_click.sam_segmentation import load_sam, refine_mask, segment

_spec = importlib.util.spec_from_file_location(
    "sam_models", Path(__file__).resolve().parents[2] / "fixtures" / "sam_models.py")
sam_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sam_models)


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    return sam_models.write_tiny_sam(tmp_path_factory.mktemp("sams") / "tiny_sam")


def reference_logits(folder, image, points, labels):
    """transformers' documented SAM usage, with the processor sized for the model's 64-px input."""
    from transformers import SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    model = SamModel.from_pretrained(folder).eval()
    processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    inputs = processor(images=image, input_points=[[points]], input_labels=[[labels]], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"], multimask_output=True)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                         binarize=False)
    return masks[0][0], out.iou_scores[0, 0]


def test_mask_follows_transformers_pipeline(sam_folder):
    image = sam_models.two_objects_image()
    points, labels = [[18, 20], [58, 26]], [1, 0]
    logits, scores = reference_logits(sam_folder, image, points, labels)
    segmenter = load_sam(str(sam_folder))
    clicks = parse_clicks("[[18, 20, 1], [58, 26, 0]]", 80, 48)
    best = segment(segmenter, image, clicks)
    assert best.shape == (48, 80)
    assert torch.equal(best, (logits[int(scores.argmax())] > 0).float())
    for index in range(3):
        assert torch.equal(segment(segmenter, image, clicks, mask_index=index), (logits[index] > 0).float())
    assert 0 < best.mean() < 1, "a non-degenerate mask (the comparison above means something)"


def test_other_family_and_non_sam_folders_are_refused(tmp_path):
    with pytest.raises(Pix2GifInputError, match="is a SAM 2 model, not Segment Anything"):
        load_sam(str(sam_models.write_other_family(tmp_path / "sam2_hiera_tiny")))
    with pytest.raises(Pix2GifInputError, match="is a model_type 'clip' model"):
        load_sam(str(sam_models.write_other_family(tmp_path / "clip", "clip")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Pix2GifInputError, match="'empty' is not a Segment-Anything folder"):
        load_sam(str(tmp_path / "empty"))


def test_dilation_grows_by_pixels_and_feather_softens_only_the_edge():
    mask = torch.zeros(40, 40)
    mask[15:25, 15:25] = 1
    assert torch.equal(refine_mask(mask, 0, 0), mask)
    grown = refine_mask(mask, 3, 0)
    expected = torch.zeros(40, 40)
    expected[12:28, 12:28] = 1
    assert torch.equal(grown, expected)
    soft = refine_mask(mask, 0, 4)
    assert soft[20, 20] > 0.99 and soft[0, 0] == 0 and 0.3 < soft[20, 15] < 0.7
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / 2) ** 2)
    kernel2d = torch.outer(kernel, kernel) / kernel.sum() ** 2
    reference = F.conv2d(F.pad(mask[None, None], (4, 4, 4, 4), mode="replicate"), kernel2d[None, None])[0, 0]
    torch.testing.assert_close(soft, reference)
