"""Input files that are not what they should be: missing, a directory, a symlink loop, unreadable.

Python reports these as ``FileNotFoundError``, ``IsADirectoryError``, ``OSError: [Errno 40] Too many levels of
symbolic links`` or ``PermissionError``, each with a traceback; here each is one sentence naming the path.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from nnunet_slem.errors import UserFacingError


def brief(error: BaseException, limit: int = 240) -> str:
    """``Type: message`` of an exception on one line, cut at ``limit`` characters (some libraries' messages span
    many lines, and the CLI promises one)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_a_file_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (``None`` when it can be opened as one)."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory, not a file"
    if os.path.islink(path):
        return "is a symbolic link that leads nowhere (a loop, or its target is missing)"
    if not os.path.lexists(path):
        return "does not exist"
    return "is not a regular file"


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """``path`` as a :class:`Path` if it is a readable regular file; else one error naming it, what it is for,
    and ``fix``."""
    path = Path(path)
    reason = not_a_file_reason(path)
    if reason is None and not os.access(path, os.R_OK):
        reason = "is not readable (permissions)"
    if reason is not None:
        raise UserFacingError(f"{what} {path} {reason}. {fix}")
    return path


def read_json(path: str | os.PathLike, what: str, fix: str) -> Any:
    """Parse a JSON file; a missing, unreadable, truncated or non-UTF-8 file is one error naming it and ``fix``.

    NaN and Infinity literals (which Python's ``json`` accepts) parse; the callers' type checks refuse them
    where a number must be finite."""
    path = require_file(path, what, fix)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserFacingError(f"Cannot read {what[0].lower() + what[1:]} {path} ({brief(e)}). {fix}") from e
    if not text.strip():
        raise UserFacingError(f"{what} {path} is empty. {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserFacingError(f"{what} {path} is not valid JSON ({brief(e)}; truncated or edited by hand?). "
                              f"{fix}") from e


def type_name(value: Any) -> str:
    """How a JSON value's type reads to a user."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
