"""``nnunetv2_topo``: one CLI with subcommands; ``--help`` at every level.

Each subcommand lives in its own module under :mod:`nnunetv2_topo.cli` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Cheap imports stand at the top of each module; heavy ones (torch,
nnU-Net, the trainers and the scheduling package that import them, matplotlib, the Zarr/Dask stack, the error maps)
happen inside the function that needs them, so that ``--help`` stays fast (``tests/test_cli.py`` checks torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nnunetv2_topo.cli.arguments import Parser
from nnunetv2_topo.errors import EXIT_USER_ERROR, TopoError, describe_os_error

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# subcommand name -> module under nnunetv2_topo.cli
SUBCOMMANDS: dict[str, str] = {
    "synth": "synth",
    "trainer-path": "trainer_path",
    "evaluate": "evaluate",
    "postprocess": "postprocess",
    "tune": "tune",
    "predict": "predict",
    "finalize": "finalize",
    "submit": "submit",
    "plot": "plot",
    "schedule": "schedule",
    "demo": "demo",
    "kaggle-bundle": "kaggle_bundle",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nnunetv2_topo",
        description="Topology-aware nnU-Net v2 tooling for the Vesuvius Challenge surface-detection data.",
        epilog="Run 'nnunetv2_topo COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"nnunetv2_topo.cli.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Every user error (:class:`TopoError`: bad input, refused output) and every
    operating-system error (read-only or full disk, permissions, a path of the wrong kind) ends in one line on
    stderr and exit status 2; Ctrl-C in 130. Anything else is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TopoError as exc:
        return _fail(args.command, str(exc))
    except OSError as exc:
        return _fail(args.command, describe_os_error(exc))
    except MemoryError:
        return _fail(args.command, "out of memory; use smaller volumes, fewer worker processes (-np) or more RAM")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(command: str, message: str) -> int:
    print(f"nnunetv2_topo {command}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
