"""Errors every layer may raise, and the one-line wording of operating-system errors (imports nothing from the
package).

:class:`TopoError` is the base of every user-facing error: the message names the bad file/key/value and the fix, and
the CLI prints it as one line (no traceback) with exit status 2. :func:`describe_os_error` words an ``OSError``
(read-only file system, disk full, permissions, a path of the wrong kind) the same way.
"""

from __future__ import annotations

import errno
import os
import sys

__all__ = ["EXIT_USER_ERROR", "CLIError", "OutputError", "TopoError", "describe_os_error", "exit_if_entry_point"]

EXIT_USER_ERROR = 2
"""Exit status of every command that stops on a user error or an operating-system error (argparse uses 2 too)."""


class TopoError(Exception):
    """Base of the user-facing errors: the message is complete (names the file/key/value and the fix)."""


class CLIError(TopoError):
    """A user error found by a command: the CLI prints it as one clear line (no traceback) and exits with status 2."""


class OutputError(TopoError, ValueError):
    """An output that cannot be written as asked (exists without --overwrite, a folder where a file is due, ...)."""


_HINTS = {
    errno.EROFS: "the file system is read-only: write the output somewhere else",
    errno.ENOSPC: "free space or write the output somewhere else",
    errno.EDQUOT: "free space or write the output somewhere else",
    errno.EACCES: "choose a folder you may write to (or fix its permissions)",
    errno.EPERM: "choose a folder you may write to (or fix its permissions)",
    errno.EISDIR: "a folder is in the way where a file is due: give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EMFILE: "raise the limit with 'ulimit -n'",
    errno.EIO: "a failing disk or network mount?",
}


def describe_os_error(exc: OSError) -> str:
    """One line naming the path(s) and the cause of ``exc``, with what to do where there is a usual fix
    (``/out/a.tif: No space left on device; free space or write the output somewhere else``)."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or -1)
    paths = [os.fspath(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths) if paths else "(no file named by the system)"
    return f"{where}: {cause}" + (f"; {hint}" if hint else "")


def exit_if_entry_point(exc: BaseException, entry_prefix: str = "nnUNetv2_") -> None:
    """Under one of nnU-Net's console commands (``nnUNetv2_train`` ...), whose ``main`` we cannot wrap: print
    ``exc`` as one line and leave with exit status 2 instead of a traceback. Elsewhere (tests, the Python API) return,
    so the caller re-raises ``exc`` as it is."""
    if not os.path.basename(sys.argv[0] if sys.argv else "").startswith(entry_prefix):
        return
    print(f"{os.path.basename(sys.argv[0])}: error: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR) from None
