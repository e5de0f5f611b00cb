"""Where numba keeps the compiled metric kernels, so that only the first call on a machine compiles them.

The folder is ``$NNUNETV2_TOPO_NUMBA_CACHE`` if set, else numba's own ``$NUMBA_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/nnunetv2_topo/numba`` (``~/.cache/nnunetv2_topo/numba``). It lies outside the package, so a
read-only install (site-packages, a Kaggle dataset) still caches, and it is exported as ``NUMBA_CACHE_DIR`` before
numba is imported, so spawned worker processes find the same folder. A folder that cannot be written falls back to
one under the system's temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CACHE_ENV = "NNUNETV2_TOPO_NUMBA_CACHE"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def numba_cache_dir() -> Path:
    """The cache folder chosen as described in the module docstring (created if missing)."""
    chosen = os.environ.get(CACHE_ENV) or os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        folder = Path(chosen).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = base / "nnunetv2_topo" / "numba"
    if not _writable(folder):
        folder = Path(tempfile.gettempdir()) / f"nnunetv2_topo-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def configure_numba_cache() -> Path:
    """Point numba's cache at :func:`numba_cache_dir` (call before the kernels are defined)."""
    folder = numba_cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported before us: its config already read the environment
        from numba.core import config

        config.CACHE_DIR = str(folder)  # type: ignore[attr-defined]  # numba sets its config names at run time
    return folder
