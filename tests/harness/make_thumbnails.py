"""Thumbnails for ComfyUI's template browser: ``workflows/<name>.jpg`` next to every bundled workflow, a frame of
the animation that workflow's own Save Animation writes when run headless with the tiny test models.

    .comfy-ci/venv/bin/python tests/harness/make_thumbnails.py            # all workflows, on v0.33.0
    .comfy-ci/venv/bin/python tests/harness/make_thumbnails.py motion_preview

The tiny models carry random weights, so the model-driven workflows show what such a model draws (coloured
noise in the workflow's motion); the weight-free ones (motion_preview) show the real result.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageSequence

HARNESS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(HARNESS_DIR))
import run_workflow  # noqa: E402
from comfy_host import REPO_ROOT  # noqa: E402

WORKFLOWS_DIR = REPO_ROOT / "workflows"
THUMBNAIL_SIDE = 384  # px: square, as the template browser crops its cards
JPEG_QUALITY = 85


def thumbnail(animation: Path, target: Path) -> None:
    """The middle frame of ``animation``, centre-cropped to a square and scaled to THUMBNAIL_SIDE, as JPEG."""
    with Image.open(animation) as clip:
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(clip)]
    frame = frames[len(frames) // 2]
    side = min(frame.size)
    left, top = (frame.width - side) // 2, (frame.height - side) // 2
    square = frame.crop((left, top, left + side, top + side))
    square.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS).save(target, quality=JPEG_QUALITY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="workflow names (default: every workflows/*.json)")
    parser.add_argument("--host", default="0.33.0", help="the host to run on (the long-clip workflow needs v0.33)")
    args = parser.parse_args(argv)
    paths = [WORKFLOWS_DIR / f"{name}.json" for name in args.names] or sorted(WORKFLOWS_DIR.glob("*.json"))

    host, workdir = run_workflow.start_host(args.host)
    for path in paths:
        result = run_workflow.run(host, path, workdir, tiny_models=True)
        if not result.success:
            print(f"{path.name}: {result.error or result.validation_error}", file=sys.stderr)
            return 1
        animations = sorted((item for output in result.outputs.values() for item in output.get("images", [])
                             if "format" in item),  # Save Animation's items carry their format; previews do not
                            key=lambda item: item["type"] != "output")  # a saved result before a temp preview
        thumbnail(run_workflow.saved_file(animations[0]), path.with_suffix(".jpg"))
        print(f"{path.with_suffix('.jpg').relative_to(REPO_ROOT)}: from {animations[0]['filename']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
