"""The journal of a parallel upload session: which numbered parts the server holds.

A session opened with a ``part_size`` takes part ``n`` at byte ``n * part_size`` of its staged
file, in any order and several at once. Once a part's bytes are written a line
``+ n size sha256 boot`` is appended to ``upload-<id>.parts`` beside the staged bytes; a part
about to be written again is first struck out (``- n``), so a rewrite cut off half way is never
taken for the old part. The first line is ``parts <part_size>``.

Nothing here is fsynced one part at a time (that cost a parallel upload a third of its speed):
a killed server's written bytes and journal lines are in the page cache and survive it, and
only an OS crash or power cut loses unsynced bytes, which means a reboot. So each record
carries the kernel's boot id, and a record from an earlier boot is not trusted: its part is
sent again. Completing fsyncs the whole before it becomes the object. Lines are appended with
one ``write`` each; a torn line is ignored.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

HEADER = "parts"
MIN_PART_SIZE = 1024 * 1024
MAX_PART_SIZE = 1024 * 1024 * 1024
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str:
    """This boot of the machine (a record written before a reboot may name lost bytes)."""
    try:
        return BOOT_ID.read_text().strip().replace("-", "")[:32] or "unknown"
    except OSError:
        return "unknown"  # no such file: every record trusted, as before a reboot


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    sha256: str


def create(path: Path, part_size: int) -> None:
    _append(path, f"{HEADER} {part_size}\n", new=True)


def read(path: Path) -> tuple[int, dict[int, Part]] | None:
    """``(part_size, parts held by number)``, or None when the session is not a parallel one;
    parts recorded before the last reboot are not held."""
    try:
        lines = path.read_text("ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if not lines or not lines[0].startswith(HEADER + " "):
        return None
    part_size = int(lines[0].split()[1])
    parts: dict[int, Part] = {}
    boot = boot_id()
    for line in lines[1:]:
        f = line.split()
        if len(f) == 5 and f[0] == "+" and f[1].isdigit() and f[2].isdigit() and len(f[3]) == 64:
            if f[4] == boot:
                parts[int(f[1])] = Part(int(f[1]), int(f[2]), f[3])
        elif len(f) == 2 and f[0] == "-" and f[1].isdigit():
            parts.pop(int(f[1]), None)
    return part_size, parts


def record(path: Path, part: Part) -> None:
    """Note ``part`` as held (its bytes are written)."""
    _append(path, f"+ {part.number} {part.size} {part.sha256} {boot_id()}\n")


def forget(path: Path, number: int) -> None:
    """Strike part ``number`` out before its bytes are overwritten."""
    _append(path, f"- {number}\n")


def _append(path: Path, line: str, new: bool = False) -> None:
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_TRUNC if new else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, line.encode("ascii"))
    finally:
        os.close(fd)
