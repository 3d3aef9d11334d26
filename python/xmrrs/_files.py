"""Reading files named by model directories: regular files only, never blocking; ``.npy``
arrays mapped, never unpickled. Writing one file of such a directory atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np


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


def load_npy_mapped(path: str | os.PathLike[str]) -> np.ndarray[Any, Any]:
    """The array of the ``.npy`` file ``path``, memory-mapped read-only: no pickles, and no
    allocation sized by its header (a header promising more than the file is refused).

    Raises
    ------
    ValueError
        A corrupt header, a file shorter than its header says, or an ``.npz`` archive (numpy
        raises several types for a corrupt header: all become this, naming the file).
    OSError
        The file cannot be opened or mapped.
    """
    name = os.fspath(path)
    try:
        a = np.load(name, mmap_mode="r", allow_pickle=False)
    except (OSError, MemoryError):
        raise
    except Exception as e:  # ValueError, SyntaxError, tokenize.TokenError, EOFError, ...
        raise ValueError(f"{name}: not a readable .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive under a .npy name
        a.close()
        raise ValueError(f"{name}: not a readable .npy array (an archive)")
    return a


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.<name>.tmp`` beside it, synced, then renamed
    into place: a reader sees the old file or the new one, never a part."""
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
