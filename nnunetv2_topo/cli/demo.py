"""``nnunetv2_topo demo`` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

HELP = "(not yet available)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from nnunetv2_topo.cli.main import CLIError

    raise CLIError("this command is not available yet")
