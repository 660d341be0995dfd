"""Numbers from the command line (or a stored config): finite, in range, and sizes that fit in memory.

``argparse`` accepts ``--lr nan``, ``--lr inf`` and ``--num-workers -1``; the first two train on silently (a NaN
loss, or an infinite step), the last fails deep inside PyTorch. A batch or volume too large for memory fails
much later with an allocator's traceback. Each is refused here, before anything runs, naming the flag.
"""

from __future__ import annotations

import math
import os
from typing import Any

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import is_int

GIB = 1024 ** 3


def check_number(value: Any, flag: str, *, integer: bool = False, minimum: float | None = None,
                 positive: bool = False, hint: str = "") -> None:
    """Refuse ``value`` for ``flag`` unless it is a finite number (an integer if ``integer``), at least
    ``minimum``, and above 0 if ``positive``; ``hint`` is appended (e.g. what 0 would mean)."""
    kind = "an integer" if integer else "a finite number"
    ok_type = is_int(value) if integer else (isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok_type or (not integer and not math.isfinite(value)):
        raise UserFacingError(f"{flag} must be {kind}, not {value!r}.{' ' + hint if hint else ''}")
    if positive and value <= 0:
        raise UserFacingError(f"{flag} must be greater than 0, not {value!r}.{' ' + hint if hint else ''}")
    if minimum is not None and value < minimum:
        bound = int(minimum) if integer else minimum
        raise UserFacingError(f"{flag} must be at least {bound}, not {value!r}.{' ' + hint if hint else ''}")


def physical_memory_bytes() -> int | None:
    """This machine's RAM, or ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(needed: int, available: int | None, what: str, where: str, fix: str) -> None:
    """Refuse a size whose (lower-bound) memory estimate ``needed`` exceeds ``available`` bytes of ``where``."""
    if available is not None and needed > available:
        raise UserFacingError(f"{what} needs at least {needed / GIB:.1f} GiB (a lower bound), more than the "
                              f"{available / GIB:.1f} GiB {where} has. {fix}")
