"""A disk that fills up while Save Animation writes: one clear message naming the node, the file and the fix,
nothing left behind (no clip, no temporary file, no companion PNG), and the next run works."""
from __future__ import annotations

from pathlib import Path

import pytest

from full_disk import NO_SPACE, fill_disk
from graphs import txt2vid

SAVE = {"filename_prefix": "full/clip", "fps": 8.0, "loop_count": 0, "pingpong": False, "save_output": True,
        "gif_dither": "none", "webp_quality": 90, "mp4_crf": 19}


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("fmt, room, full_from", [("gif", 0, 1), ("gif", 600, 1), ("webp", 0, 1), ("apng", 100, 1),
                                                  ("mp4", 0, 1), ("mp4", 2000, 1),
                                                  ("gif", 0, 2)])  # the GIF is written, its PNG is not
def test_a_full_disk_is_one_clear_message_and_leaves_nothing(host, pack, motion_files, monkeypatch, fmt, room,
                                                             full_from):
    import folder_paths

    prompt = txt2vid(motion_files["v2.ckpt"], frames=4, steps=1, save={**SAVE, "format": fmt})
    extra = {"extra_pnginfo": {"workflow": {"nodes": []}}}
    output = Path(folder_paths.get_output_directory())
    before = files_under(output)
    fill_disk(pack, monkeypatch, room, full_from)
    result = host.run(prompt, extra)
    assert not result.success
    message = result.error["exception_message"]
    assert message.startswith("[Save Animation] could not write '") and NO_SPACE in message, message
    assert files_under(output) == before
    monkeypatch.undo()
    assert host.run(prompt).success
