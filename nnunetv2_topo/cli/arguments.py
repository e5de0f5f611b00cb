"""Argument blocks and helpers shared by the subcommands (and ``nnUNetv2_convert_vesuvius``), so that a flag is
spelled and explained once. Subcommand-specific blocks shared by a few commands live with their owner (e.g.
:func:`nnunetv2_topo.cli.postprocess.add_probability_arguments` for ``postprocess``, ``submit`` and ``tune``).

:class:`Parser` and :func:`rename_flag` keep renamed flags working: the old spelling is read as the new one, with one
note on stderr naming the new flag; ``--help`` shows only the new one (and lists the old ones at the end)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["VOCABULARY", "Parser", "add_processes_argument", "arg_values", "rename_flag"]

VOCABULARY: tuple[tuple[str, str], ...] = (
    ("--input", "what the command reads: test volumes (predict), probability maps or model folders (postprocess, "
     "submit, tune: once per model), predictions (evaluate)"),
    ("--binary-input", "submit: binary predictions, zipped as they are"),
    ("--output", "what the command writes, a file or a folder (finalize takes it as its argument)"),
    ("--gt", "ground-truth label volumes (evaluate, tune)"),
    ("--model", "a trained-model folder (predict, kaggle-bundle: once per model)"),
    ("--config", "the post-processing file postprocess.json written by tune (postprocess, submit, predict, "
     "kaggle-bundle)"),
    ("--topo-config", "the trainer configuration YAML (schedule; training reads it from nnUNet_topo_config)"),
    ("--weights, --fusion", "fusion of several inputs or models; with --config each replaces only the value it names "
     "(one rule for every command: nnunetv2_topo.inference.fusion_settings)"),
    ("-np, --num-processes", "worker processes"),
    ("--time-budget-hours, --time-budget-minutes, --wait-seconds, --cache-mb",
     "a quantity carries its unit in its name"),
    ("--overwrite", "replace an existing output (refused without it)"),
    ("--quiet", "no progress bar"),
)  # fmt: skip
"""The flags that mean the same in every command (flag, meaning): the vocabulary of the CLI reference page."""


def add_processes_argument(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``-np`` / ``--num-processes`` (destination ``num_processes``): the worker count of every command."""
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=default, help=help)


def arg_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.<name>}`` for the parsed options passed on unchanged as keyword arguments of the same name."""
    return {name: getattr(args, name) for name in names}


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads the old spelling of a renamed flag (:func:`rename_flag`) as the new one; its
    subcommand parsers are of this class too."""

    renamed_flags: dict[str, str]

    def parse_known_args(self, args=None, namespace=None):
        renamed = getattr(self, "renamed_flags", {})
        if renamed:
            args = _new_spellings(self.prog, renamed, sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        renamed = getattr(self, "renamed_flags", {})
        shown = ", ".join(f"{old} (now {new})" for old, new in renamed.items())
        return super().format_help() + (f"\nold spellings, still accepted with a note: {shown}\n" if renamed else "")


def rename_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """``old`` keeps working as ``new`` (a flag of ``parser``) in a :class:`Parser`: hidden from the options of
    ``--help``, listed at its end, and one note on stderr when used."""
    if not any(new in action.option_strings for action in parser._actions):
        raise ValueError(f"rename_flag: {parser.prog} has no flag {new}")
    parser.__dict__.setdefault("renamed_flags", {})[old] = new


def _new_spellings(prog: str, renamed: dict[str, str], args: list[str]) -> list[str]:
    """``args`` with every old flag spelling (``--old`` or ``--old=VALUE``) replaced by its new name, and one note
    per old flag on stderr; nothing after ``--`` is touched."""
    out: list[str] = []
    noted: set[str] = set()
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        old, eq, value = arg.partition("=")
        if old in renamed:
            if old not in noted:
                print(f"{prog}: note: {old} is deprecated; use {renamed[old]}", file=sys.stderr)
                noted.add(old)
            arg = renamed[old] + eq + value
        out.append(arg)
    return out
