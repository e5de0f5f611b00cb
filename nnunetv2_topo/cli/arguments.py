"""Argument blocks and helpers shared by the subcommands (and ``nnUNetv2_convert_vesuvius``), so that a flag is
spelled and explained once. Subcommand-specific blocks shared by a few commands live with their owner (e.g.
:func:`nnunetv2_topo.cli.postprocess.add_probability_arguments` for ``postprocess``, ``submit`` and ``tune``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_processes_argument", "arg_values"]


def add_processes_argument(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``-np`` / ``--num-processes`` (destination ``num_processes``): the worker count of every command."""
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=default, help=help)


def arg_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.<name>}`` for the parsed options passed on unchanged as keyword arguments of the same name."""
    return {name: getattr(args, name) for name in names}
