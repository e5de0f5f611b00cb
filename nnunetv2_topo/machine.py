"""What this machine offers a process: CPU cores and free memory (used to size worker pools)."""

from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "cpu_cores"]


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo, or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all cores)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
