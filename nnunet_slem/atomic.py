"""Atomic file writes: write a temporary sibling, then ``os.replace``, so a kill never leaves half a file.

Every output of nnunet-slem (checkpoints, tables, JSON, figures) goes through here.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the temporary file normal permissions (mkstemp makes it owner-only) and rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_atomic_named(path: str | os.PathLike, write_to: Callable[[str], object]) -> None:
    """Let ``write_to`` fill a dot-prefixed temporary sibling given by name (for writers that want a file name,
    such as nnU-Net's ``save_checkpoint``), flush it to disk, then rename it over ``path``. On any failure the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_to(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Let ``write`` fill a temporary sibling through a binary file object, then as :func:`write_atomic_named`."""

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    write_atomic_named(path, fill)


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    write_atomic(path, lambda f: f.write(payload))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, **dump_kwargs) + "\n")


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """``fig.savefig`` into memory, then an atomic write; the format follows the file's suffix."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    write_bytes_atomic(path, buf.getvalue())
