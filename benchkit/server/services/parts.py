"""The journal of a parallel upload session: which numbered parts the server holds.

A session opened with a ``part_size`` takes part ``n`` at byte ``n * part_size`` of its staged
file, in any order and several at once. Each part is fsynced before a line ``+ n size sha256``
is appended to ``upload-<id>.parts`` beside the staged bytes, so a recorded part is on disk;
a part about to be written again is first struck out (``- n``, fsynced), so a rewrite cut off
half way is never taken for the old part. The first line is ``parts <part_size>``. Lines are
appended with one ``write`` each; a torn last line (a power cut) is ignored, which only means
a part is sent again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HEADER = "parts"
MIN_PART_SIZE = 1024 * 1024
MAX_PART_SIZE = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    sha256: str


def create(path: Path, part_size: int) -> None:
    _append(path, f"{HEADER} {part_size}\n", sync=False, new=True)


def read(path: Path) -> tuple[int, dict[int, Part]] | None:
    """``(part_size, parts held by number)``, or None when the session is not a parallel one."""
    try:
        lines = path.read_text("ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].startswith(HEADER + " "):
        return None
    part_size = int(lines[0].split()[1])
    parts: dict[int, Part] = {}
    for line in lines[1:]:
        f = line.split()
        if len(f) == 4 and f[0] == "+" and f[1].isdigit() and f[2].isdigit() and len(f[3]) == 64:
            parts[int(f[1])] = Part(int(f[1]), int(f[2]), f[3])
        elif len(f) == 2 and f[0] == "-" and f[1].isdigit():
            parts.pop(int(f[1]), None)
    return part_size, parts


def record(path: Path, part: Part) -> None:
    """Note ``part`` as held (its bytes are already durable)."""
    _append(path, f"+ {part.number} {part.size} {part.sha256}\n", sync=False)


def forget(path: Path, number: int) -> None:
    """Strike part ``number`` out before its bytes are overwritten (durably, first)."""
    _append(path, f"- {number}\n", sync=True)


def _append(path: Path, line: str, sync: bool, new: bool = False) -> None:
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_TRUNC if new else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, line.encode("ascii"))
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
