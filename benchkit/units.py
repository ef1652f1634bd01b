"""Byte sizes as people write them ("64MB", "1GiB") and as BenchKit prints them."""

from __future__ import annotations

import re

from benchkit.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: str | int) -> int:
    """``"64MB"`` -> 64_000_000 (KB/MB/GB decimal, KiB/MiB/GiB binary); positive ints pass through."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"invalid size {value!r}; write e.g. 64MB, 500KB or 1GB")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ConfigError(f"invalid size {value!r}: it must be positive")
    return n


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal units, as disks, clouds and ``parse_size`` count)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
