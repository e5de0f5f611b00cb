"""Errors every layer may raise (this module imports nothing from the package)."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user error: the CLI prints it as one clear line (no traceback) and exits with status 2."""
