"""Process helpers for jobs (Linux ``/proc``; no psutil at run time)."""

from __future__ import annotations

import os


def signal_group(pgid: int | None, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when there is no such group."""
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stat_fields(pid: int | str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    return stat[stat.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone or a zombie.

    With the pid it identifies a process for good: a recycled pid has another start time."""
    fields = _stat_fields(pid)
    if not fields or fields[0] == b"Z":
        return None
    return int(fields[19])


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields and len(fields) > 1 and int(fields[1]) == pid:
                found.append(int(entry))
    return found
