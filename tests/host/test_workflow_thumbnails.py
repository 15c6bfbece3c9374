"""Every bundled workflow has its template-browser thumbnail (``workflows/<name>.jpg``, which the front end asks the
server for), made by tests/harness/make_thumbnails.py; no thumbnail without its workflow. Needs no host."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKFLOWS_DIR = Path(__file__).resolve().parent.parent.parent / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_has_a_thumbnail(path):
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"run tests/harness/make_thumbnails.py {path.stem}"
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.width == image.height >= 256
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10, "a flat thumbnail shows nothing of the workflow"


def test_no_thumbnail_without_its_workflow():
    assert sorted(p.stem for p in WORKFLOWS_DIR.glob("*.jpg")) == sorted(p.stem for p in WORKFLOWS)
