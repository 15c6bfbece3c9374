"""A disk that fills up while Save Animation writes: one clear message naming the node, the file and the fix,
nothing left behind (no clip, no temporary file, no companion PNG), and the next run works."""
from __future__ import annotations

import errno
import importlib
import io
from pathlib import Path

import pytest

from graphs import txt2vid

SAVE = {"filename_prefix": "full/clip", "fps": 8.0, "loop_count": 0, "pingpong": False, "save_output": True,
        "gif_dither": "none", "webp_quality": 90, "mp4_crf": 19}


class FillingDisk(io.FileIO):
    """A file on a disk that fills up: writes fail with ENOSPC once ``room`` bytes are written, or from the
    ``full_from``-th file opened on (1 = the first)."""

    room = 0
    full_from = 1
    opened = 0

    def __init__(self, path, mode):
        super().__init__(path, mode)
        FillingDisk.opened += 1
        self.full = FillingDisk.opened >= FillingDisk.full_from

    def write(self, data) -> int:
        if self.full and FillingDisk.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        FillingDisk.room -= len(data) if self.full else 0
        return super().write(data)


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("fmt, room, full_from", [("gif", 0, 1), ("gif", 600, 1), ("webp", 0, 1), ("apng", 100, 1),
                                                  ("mp4", 0, 1), ("mp4", 2000, 1),
                                                  ("gif", 0, 2)])  # the GIF is written, its PNG is not
def test_a_full_disk_is_one_clear_message_and_leaves_nothing(host, pack, motion_files, monkeypatch, fmt, room,
                                                             full_from):
    import folder_paths

    atomic_file = importlib.import_module(pack.__name__ + ".pix2gif_core.atomic_file")
    prompt = txt2vid(motion_files["v2.ckpt"], frames=4, steps=1, save={**SAVE, "format": fmt})
    extra = {"extra_pnginfo": {"workflow": {"nodes": []}}}
    FillingDisk.room, FillingDisk.full_from, FillingDisk.opened = room, full_from, 0
    output = Path(folder_paths.get_output_directory())
    before = files_under(output)
    monkeypatch.setattr(atomic_file, "open", lambda path, mode: FillingDisk(path, mode), raising=False)
    result = host.run(prompt, extra)
    assert not result.success
    message = result.error["exception_message"]
    assert message.startswith("[Save Animation] could not write '") and "No space left on device" in message
    assert "nothing was written – free disk space or choose another output folder" in message
    assert files_under(output) == before
    monkeypatch.undo()
    assert host.run(prompt).success
