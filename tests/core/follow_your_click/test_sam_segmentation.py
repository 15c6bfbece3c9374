"""Click → mask against transformers' own SAM pipeline called directly (processor, model, post_process_masks) and
SAM 2 against Sam2Model with the official SAM 2 transforms; original ``sam_vit_*`` checkpoints (written by the
fixture's own inverse name map) against the Hugging Face folder of the same weights; files of other families."""
import importlib.util
from pathlib import Path

import safetensors.torch

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


IMAGE = sam_models.two_objects_image()
CLICKS = "[[18, 20, 1], [58, 26, 0]]"


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory):
    return sam_models.write_tiny_sam(tmp_path_factory.mktemp("sams") / "tiny_sam")


def assert_masks_follow(segmenter, clicks, logits, scores):
    """``segment`` gives the reference's thresholded logits: the best-IoU mask by default, each index on request."""
    best = segment(segmenter, IMAGE, clicks)
    assert best.shape == (48, 80)
    assert torch.equal(best, (logits[int(scores.argmax())] > 0).float())
    for index in range(3):
        assert torch.equal(segment(segmenter, IMAGE, clicks, mask_index=index), (logits[index] > 0).float())
    assert 0 < best.mean() < 1, "a non-degenerate mask (the comparison above means something)"


def test_mask_follows_transformers_pipeline(sam_folder):
    logits, scores = sam_models.transformers_sam_logits(sam_folder, IMAGE, [[18, 20], [58, 26]], [1, 0])
    assert_masks_follow(load_sam(str(sam_folder)), parse_clicks(CLICKS, 80, 48), logits, scores)


def test_other_family_and_non_sam_folders_are_refused(tmp_path):
    with pytest.raises(Pix2GifInputError, match="is a SAM-HQ model, not Segment Anything"):
        load_sam(str(sam_models.write_other_family(tmp_path / "sam_hq_vit_b", "sam_hq")))
    with pytest.raises(Pix2GifInputError, match="is a model_type 'clip' model"):
        load_sam(str(sam_models.write_other_family(tmp_path / "clip", "clip")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Pix2GifInputError, match="'empty' is not a Segment-Anything folder"):
        load_sam(str(tmp_path / "empty"))


def test_hf_folder_with_missing_weights_is_refused_by_name(tmp_path):
    folder = sam_models.write_tiny_sam(tmp_path / "sam_cut")
    weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
    del weights["mask_decoder.iou_token.weight"]
    safetensors.torch.save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(Pix2GifInputError, match=r"'sam_cut' does not hold the weights .*mask_decoder.iou_token"):
        load_sam(str(folder))


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



@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_checkpoint_gives_the_hf_folders_masks(sam_folder, tmp_path, suffix):
    from transformers import SamModel

    reference_model = SamModel.from_pretrained(sam_folder)
    path = sam_models.write_original_sam(tmp_path / f"sam_vit_tiny{suffix}", reference_model)
    original = load_sam(str(path))
    assert original.name == path.name
    reference = reference_model.state_dict()
    loaded = original.model.state_dict()
    assert loaded.keys() == reference.keys() and all(torch.equal(loaded[k], reference[k]) for k in reference)
    folder = load_sam(str(sam_folder))
    clicks = parse_clicks(CLICKS, 80, 48)
    for index in (-1, 0, 1, 2):
        assert torch.equal(segment(original, IMAGE, clicks, mask_index=index),
                           segment(folder, IMAGE, clicks, mask_index=index))


#: segment-anything's build_sam / transformers' convert_sam_to_hf.py get_config: width, depth, heads, global blocks
FULL_SIZE = {"vit_b": (768, 12, 12, [2, 5, 8, 11]), "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
             "vit_h": (1280, 32, 16, [7, 15, 23, 31])}


@pytest.mark.parametrize("variant", FULL_SIZE)
def test_full_size_variant_is_read_from_the_shapes(variant):
    """ViT-B/L/H in the original layout (on the meta device) give SAM's configuration back."""
    from transformers import SamConfig, SamModel

    from pix2gif_core.follow_your_click.sam_checkpoint import sam_config_from_shapes

    width, depth, heads, global_blocks = FULL_SIZE[variant]
    expected = SamConfig(vision_config=dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                                            global_attn_indexes=global_blocks))
    with torch.device("meta"):
        model = SamModel(expected)
    config = sam_config_from_shapes(sam_models.original_state_dict(model))
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        assert getattr(config, part).to_dict() == getattr(expected, part).to_dict(), part


def test_original_checkpoint_with_missing_or_extra_tensors_is_refused_by_name(tmp_path):
    weights = sam_models.original_state_dict(sam_models.tiny_sam())
    missing = dict(weights)
    del missing["mask_decoder.transformer.layers.1.mlp.lin2.weight"]
    torch.save(missing, tmp_path / "sam_vit_cut.pth")
    with pytest.raises(Pix2GifInputError, match=r"'sam_vit_cut.pth' does not fit .*lin2"):
        load_sam(str(tmp_path / "sam_vit_cut.pth"))
    extra = {**weights, "mask_decoder.extra_head.weight": torch.zeros(2)}
    safetensors.torch.save_file(extra, str(tmp_path / "sam_vit_extra.safetensors"))
    with pytest.raises(Pix2GifInputError, match=r"'sam_vit_extra.safetensors' does not fit .*extra_head"):
        load_sam(str(tmp_path / "sam_vit_extra.safetensors"))


@pytest.mark.parametrize("file_name, keys, words", [
    ("v1-5-pruned.safetensors", ["model.diffusion_model.input_blocks.0.0.weight"], "a Stable Diffusion checkpoint"),
    ("clip_l.safetensors", ["text_model.embeddings.token_embedding.weight"], "a CLIP model"),
    ("sam2_hiera_tiny.pt", ["model"], "an original SAM 2 checkpoint"),
    ("sam_hq_vit_b.pth", [*sam_models.original_state_dict(sam_models.tiny_sam()), "mask_decoder.hf_token.weight"],
     "a SAM-HQ checkpoint"),
    ("model.safetensors", ["vision_encoder.pos_embed", "mask_decoder.iou_token.weight"],
     "a transformers SAM weights file without its config.json"),
    ("random.pth", ["weight"], "not a Segment-Anything checkpoint"),
])
def test_weight_file_of_another_family_is_refused_by_name(tmp_path, file_name, keys, words):
    weights = {key: torch.zeros(1) for key in keys}
    if keys == ["model"]:
        weights = {"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}
    path = tmp_path / file_name
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(weights, str(path))
    else:
        torch.save(weights, path)
    with pytest.raises(Pix2GifInputError, match=f"'{file_name}' is {words}"):
        load_sam(str(path))


def test_sam2_mask_follows_sam2_model_and_its_transforms(tmp_path):
    folder = sam_models.write_tiny_sam2(tmp_path / "tiny_sam2")
    logits, scores = sam_models.sam2_reference_logits(folder, IMAGE, [[18, 20], [58, 26]], [1, 0])
    assert_masks_follow(load_sam(str(folder)), parse_clicks(CLICKS, 80, 48), logits, scores)


def test_sam2_video_folder_runs_its_image_model(tmp_path):
    """The facebook/sam2*-hiera-* downloads are Sam2VideoModel folders: their image model (every Sam2Model tensor,
    none initialised anew) gives the SAM 2 reference's masks."""
    folder = sam_models.write_tiny_sam2_video(tmp_path / "sam2.1-hiera-tiny")
    segmenter = load_sam(str(folder))
    stored = safetensors.torch.load_file(str(folder / "model.safetensors"))
    loaded = segmenter.model.state_dict()
    assert all(torch.equal(loaded[key], stored[key]) for key in loaded)
    logits, scores = sam_models.sam2_reference_logits(folder, IMAGE, [[18, 20], [58, 26]], [1, 0])
    assert_masks_follow(segmenter, parse_clicks(CLICKS, 80, 48), logits, scores)
