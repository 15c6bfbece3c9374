"""Files that appear whole or not at all, and one clear message when the file system refuses a write.

:func:`atomic_output` writes into a hidden temporary file next to the target (``.<name>.tmp-<random>``),
flushes and fsyncs it, then renames it over the target: readers never see a half-written file, and if the
block fails for any reason (a full disk, a cancelled prompt, an encoder error) the temporary file is removed
and the target is left as it was. A file-system refusal (disk full, quota, no permission, read-only, I/O error)
becomes a :class:`Pix2GifInputError` naming the file and the fix instead of a raw ``OSError``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import Pix2GifInputError

_FIXES = {
    errno.ENOSPC: "free disk space or choose another output folder",
    errno.EDQUOT: "free disk space (your quota is used up) or choose another output folder",
    errno.EFBIG: "the file is larger than this file system allows; make the clip smaller or use another folder",
    errno.EACCES: "choose an output folder you can write to",
    errno.EPERM: "choose an output folder you can write to",
    errno.EROFS: "the folder is on a read-only file system; choose another output folder",
    errno.EIO: "the disk reported an I/O error; check it or choose another output folder",
}


def refused_write(final: Path, error: BaseException) -> Pix2GifInputError | None:
    """The user-facing error for a file-system refusal while writing ``final`` – found in ``error`` or what it
    wraps (PyAV reports a failed write as "Error in PyAV callback", the OSError as its context); else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _FIXES:
            reason = error.strerror or os.strerror(error.errno)
            return Pix2GifInputError(f"could not write '{final}': {reason}; nothing was written – "
                                     f"{_FIXES[error.errno]}.")
        error = error.__cause__ or error.__context__
    return None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open directories)."""
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``final`` only if the block finishes; otherwise it is deleted."""
    temporary = final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")
    try:
        with open(temporary, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        refusal = refused_write(final, error)
        if refusal is None:
            raise
        raise refusal from error
    _fsync_directory(final.parent)
