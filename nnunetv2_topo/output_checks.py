"""How every command treats its output before any work: one rule for files and one for folders.

* A file output (``submission.zip``, ``postprocess.json``, ``progress_topo.png``) that exists is refused unless
  ``--overwrite``; a folder in its place is always refused (``--overwrite`` replaces files, never folders).
* A folder output (``predict``/``postprocess --output``, ``synth --output``) that holds files is refused unless
  ``--overwrite``; a file in its place is always refused.
* Missing parent folders are created (``mkdir -p``); a file where a parent folder is due is refused.
* The place is then probed: a read-only file system or a folder without write permission is reported before hours
  of work, not after them.

Every refusal is an :class:`~nnunetv2_topo.errors.OutputError` naming the flag, the path and the fix.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from nnunetv2_topo.errors import OutputError

__all__ = ["check_output_file", "check_output_folder", "probe_writable", "stale_files"]


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a hidden file in ``folder``: raises the ``OSError`` (read-only, permission, full inode
    table) now rather than when the first result is due. ``os.access`` is not enough: root passes it everywhere."""
    fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(fd)
    os.unlink(name)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: str | os.PathLike, overwrite: bool, flag: str, example: str = "") -> Path:
    """Refuse an existing ``path`` without ``overwrite``, and in any case a folder in its place or a file among its
    parents; create the parent folders and probe them. ``example``: a file name to suggest when a folder is given."""
    path = Path(path)
    if path.is_dir():
        hint = f" such as {path / example}" if example else ""
        raise OutputError(
            f"{flag} {path} is a folder; give a file name{hint} (--overwrite replaces files, not folders)"
        )
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{flag} {path} exists; add --overwrite to replace it")
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; choose another {flag}")
    path.parent.mkdir(parents=True, exist_ok=True)
    probe_writable(path.parent)
    return path


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def check_output_folder(folder: str | os.PathLike, overwrite: bool, flag: str, create: bool = True) -> Path:
    """Refuse a file in place of ``folder``, and a folder that holds files without ``overwrite``; create it (unless
    ``create`` is False: for commands that build it in a staging folder) and probe it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file; give a folder (--overwrite replaces folders, not files)")
    if folder.is_dir():
        entries = _visible(folder)
        if entries and not overwrite:
            shown = ", ".join(p.name for p in entries[:3]) + (" ..." if len(entries) > 3 else "")
            raise OutputError(
                f"{flag} {folder} is not empty ({len(entries)} entries: {shown}); choose an empty or new folder, "
                "or add --overwrite to replace what this run writes"
            )
    parent = _nearest_existing(folder)
    if not parent.is_dir():
        raise OutputError(f"{flag} {folder}: {parent} is a file, not a folder; choose another {flag}")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    else:  # built elsewhere (a staging sibling) and renamed in: probe the folder and where the sibling goes
        for place in {_nearest_existing(folder), _nearest_existing(folder.parent)}:
            probe_writable(place)
    return folder


def stale_files(folder: str | os.PathLike, written: Iterable[str]) -> list[str]:
    """Visible files in ``folder`` other than the names ``written``: left over from an earlier run after an
    ``--overwrite`` (they are kept; the caller warns about them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    keep = set(written)
    return [p.name for p in _visible(folder) if p.is_file() and p.name not in keep]
