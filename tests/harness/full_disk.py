"""A disk that fills up, for tests: files the pack writes through ``atomic_file.atomic_output`` fail with ENOSPC."""
from __future__ import annotations

import errno
import importlib
import io


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


def fill_disk(pack, monkeypatch, room: int = 0, full_from: int = 1) -> None:
    """From now on (until ``monkeypatch`` undoes it) the pack's atomic writes land on a :class:`FillingDisk`."""
    atomic_file = importlib.import_module(pack.__name__ + ".pix2gif_core.atomic_file")
    FillingDisk.room, FillingDisk.full_from, FillingDisk.opened = room, full_from, 0
    monkeypatch.setattr(atomic_file, "open", lambda path, mode: FillingDisk(path, mode), raising=False)


#: what the message of a write refused for lack of space says after the file name
NO_SPACE = "No space left on device; nothing was written – free disk space or choose another output folder"
