"""Sizes as people read them ("95 MB", "3.1 GB", "40 of 95 MB"), for the CLI, the window and the core."""

from __future__ import annotations

GIB = 1024**3


def gb(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GB" if n_bytes >= GIB / 10 else f"{n_bytes / 1024**2:.0f} MB"


def gb_of(done: float, total: float) -> str:
    """ "95 of 253 MB": both in the unit of the total."""
    unit = gb(total).split()[1]
    scale = GIB if unit == "GB" else 1024**2
    digits = 1 if unit == "GB" else 0
    return f"{done / scale:.{digits}f} of {total / scale:.{digits}f} {unit}"
