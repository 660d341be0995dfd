"""Where a command will write: checked before it writes anything, so that a read-only folder, a path that
exists as a file (or as a folder where a file goes), or a missing parent is one line naming the path and the fix
instead of a ``PermissionError``/``FileExistsError``/``NotADirectoryError`` after part of the work is done.
"""

from __future__ import annotations

import os
from pathlib import Path

from nnunet_slem.errors import UserFacingError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a broken symlink counts as existing: it blocks a mkdir)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _writable_dir(folder: Path, path: Path, what: str, flag: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserFacingError(f"Cannot write the {what} {path}: the folder {folder} is read-only for this user. "
                              f"Make it writable (chmod u+w {folder}) or {flag}.")


def check_output_dir(path: str | os.PathLike, what: str, flag: str = "choose another folder",
                     create_parents: bool = True) -> Path:
    """``path`` will be a folder this command creates or writes into. Refuse a file (or a dangling link) in its
    place or in place of one of its parents, a missing parent when ``create_parents`` is False, and a read-only
    folder. ``flag`` is the fix, e.g. ``"pass another folder with -o"``."""
    path = Path(path).expanduser()
    existing = _nearest_existing(path)
    if existing.is_dir():
        if existing != path and not create_parents and existing != path.parent:
            raise UserFacingError(f"The {what} {path} cannot be created: its parent {path.parent} does not exist. "
                                  f"Create the parent first, or {flag}.")
        _writable_dir(existing, path, what, flag)
        return path
    where = "the path" if existing == path else f"its parent {existing}"
    kind = "a symbolic link that leads nowhere" if os.path.islink(existing) and not existing.exists() else "a file"
    raise UserFacingError(f"The {what} {path} cannot be a folder: {where} exists as {kind}. Move it away, or "
                          f"{flag}.")


def check_output_file(path: str | os.PathLike, what: str, flag: str = "choose another file name",
                      create_parents: bool = False) -> Path:
    """``path`` will be a file this command writes (replacing an existing file is fine). Refuse a folder in its
    place, a parent that is a file or (unless ``create_parents``) missing, and a read-only folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserFacingError(f"The {what} {path} exists as a folder. Move it away, or {flag}.")
    parent = path.parent
    if not parent.is_dir():
        if create_parents:
            check_output_dir(parent, f"folder of the {what}", flag)  # a file in its way, read-only ancestors
            return path
        state = "is not a folder" if os.path.lexists(parent) else "does not exist"
        raise UserFacingError(f"Cannot write the {what} {path}: its folder {parent} {state}. Create the folder "
                              f"first, or {flag}.")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise UserFacingError(f"Cannot write the {what} {path}: the file is read-only. Make it writable, or {flag}.")
    _writable_dir(parent, path, what, flag)
    return path
