"""Reading files named by model directories: regular files only, never blocking."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_regular(path: Path, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (following links) of at most
    ``max_bytes``.

    A FIFO, a device or a directory is a ``ValueError`` at once: the file is opened without
    blocking and checked again after opening, so a FIFO swapped in meanwhile cannot hang the
    reader.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a regular file, or is larger than ``max_bytes``.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: the {what} is not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise ValueError(f"{path}: the {what} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ValueError(
                f"{path}: {st.st_size} bytes, more than a {what} can hold ({max_bytes})"
            )
        return f.read() if max_bytes is None else f.read(max_bytes + 1)
