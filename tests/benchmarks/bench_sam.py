"""Benchmark: Segment Anything per click (Click Mask). First the FLOPs of one click – the image encoder, then the
prompt encoder + mask decoder – counted by ``torch.utils.flop_counter`` on the meta device (no weights, no
compute) at the tiny test model's shape and the full-size ViT-B/L/H shapes (1024² input); then the CPU time of one
click at the ViT-B shape (random weights, a 512² photo, one positive click): ours (``segment``: processor, model,
post-processing, best mask) against transformers' own pipeline called directly (the baseline), interleaved pairs
measured in the same run, ratio ours/baseline per pair (median and p10–p90).

Usage: python tests/benchmarks/bench_sam.py [--pairs N] [--flops-only]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

import sam_models  # noqa: E402
from bench_motion_module import paired  # noqa: E402

from pix2gif_core.follow_your_click.click_points import parse_clicks  # noqa: E402
from pix2gif_core.follow_your_click.sam_segmentation import SamSegmenter, sam_prompts, segment  # noqa: E402

#: transformers' convert_sam_to_hf.py get_config: width, depth, heads, global-attention blocks
FULL_SIZE = {"ViT-B": (768, 12, 12, [2, 5, 8, 11]), "ViT-L": (1024, 24, 16, [5, 11, 17, 23]),
             "ViT-H": (1280, 32, 16, [7, 15, 23, 31])}


def full_size_config(variant: str):
    from transformers import SamConfig

    width, depth, heads, global_blocks = FULL_SIZE[variant]
    return SamConfig(vision_config=dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                                        global_attn_indexes=global_blocks))


def click_flops(config) -> tuple[float, float, int]:
    """(image-encoder FLOPs, prompt + decoder FLOPs, parameters) of one click on the meta device."""
    from transformers import SamModel

    with torch.device("meta"):
        model = SamModel(config).eval().requires_grad_(False)  # the flop counter's module hooks want no leaves
        size = config.vision_config.image_size
        pixels = torch.zeros(1, 3, size, size)
        points, labels = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, dtype=torch.int64)
    with torch.no_grad():
        with FlopCounterMode(display=False) as encoder_count:
            embeddings = model.get_image_embeddings(pixels)
        with FlopCounterMode(display=False) as decoder_count:
            model(image_embeddings=embeddings, input_points=points, input_labels=labels, multimask_output=True)
    return (encoder_count.get_total_flops(), decoder_count.get_total_flops(),
            sum(p.numel() for p in model.parameters()))


def transformers_click(model, processor, image: np.ndarray, point: list[float]) -> torch.Tensor:
    """transformers' documented SAM usage: processor → model → post_process_masks → the best-IoU mask."""
    inputs = processor(images=image, input_points=[[[point]]], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"], multimask_output=True)
    masks = processor.image_processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                         inputs["reshaped_input_sizes"], binarize=False)[0][0]
    return (masks[int(out.iou_scores[0, 0].argmax())] > 0).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--flops-only", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} CPUs")
    print("| model, one click | input | parameters M | image encoder GFLOP | prompt + decoder GFLOP |")
    print("|---|---|---|---|---|")
    shapes = {"tiny test SAM": sam_models.tiny_sam_config(), **{v: full_size_config(v) for v in FULL_SIZE}}
    for name, config in shapes.items():
        encoder, decoder, parameters = click_flops(config)
        size = config.vision_config.image_size
        print(f"| {name} | {size}² | {parameters / 1e6:.2f} | {encoder / 1e9:.4g} | {decoder / 1e9:.3g} |")
    if args.flops_only:
        return
    from transformers import SamModel

    torch.manual_seed(0)
    model = SamModel(full_size_config("ViT-B")).eval()  # random weights: the time does not depend on them
    prompts = sam_prompts(None, model.config.vision_config.image_size)
    segmenter = SamSegmenter(model, prompts, "ViT-B (random)")
    image = np.asarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3)), dtype=np.uint8)
    clicks = parse_clicks("[[256, 200, 1]]", 512, 512)
    same = torch.equal(segment(segmenter, image, clicks), transformers_click(model, prompts.processor, image,
                                                                             [256.0, 200.0]))
    row = paired("one click, ViT-B, 512² photo", lambda: transformers_click(model, prompts.processor, image,
                                                                            [256.0, 200.0]),
                 lambda: segment(segmenter, image, clicks), args.pairs, 1, torch.device("cpu"))
    print(f"\nsame mask as transformers' pipeline: {same}")
    print("| case | transformers ms | ours ms | ours/transformers median [p10–p90] |")
    print("|---|---|---|---|")
    print(f"| {row['case']} | {row['naive_ms']:.0f} | {row['ours_ms']:.0f} | {row['ratio']:.2f} "
          f"[{row['p10']:.2f}–{row['p90']:.2f}] |")


if __name__ == "__main__":
    main()
