"""``nnunetv2_topo synth``: write a synthetic Vesuvius-like dataset in the Kaggle layout."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from nnunetv2_topo.cli.arguments import add_processes_argument, arg_values, rename_flag
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.machine import available_memory_bytes
from nnunetv2_topo.output_checks import check_output_folder
from nnunetv2_topo.synth.generator import SheetTopology, SheetTopologyError
from nnunetv2_topo.synth.layout import write_kaggle_dataset

if TYPE_CHECKING:
    from nnunetv2_topo.synth.generator import SheetTopology

HELP = "write a synthetic Vesuvius-like dataset (Kaggle layout: train.csv, train_images/, train_labels/, ...)"
DESCRIPTION = """\
Write synthetic scroll-CT volumes in the Kaggle layout of the Vesuvius surface-detection data:

  OUT/train.csv, OUT/test.csv     id,scroll_id
  OUT/train_images/<id>.tif       uint8 multi-page LZW TIFF
  OUT/train_labels/<id>.tif       0 background, 1 papyrus surface, 2 unlabeled (ignore)
  OUT/test_images/<id>.tif
  OUT/test_labels/<id>.tif        not part of Kaggle's layout: ground truth for scoring test predictions

Each volume holds several wavy papyrus sheets along axis 0, some touching (the merge case), with holes, frayed
edges, CT-like noise and per-scroll intensity differences; label 2 covers a 3-voxel border and unannotated regions.
The same --seed gives identical files. Convert the result for nnU-Net with nnUNetv2_convert_vesuvius.

--regime crowded makes the cases that topology metrics punish common: half the gaps between sheets touch, the
others are 1.5-6 voxels (nominal: 15 % touch, 5-16 voxels), and 90 % of the sheets have 1-5 holes (nominal: 40 %,
1-3). --touch-rate, --gap, --hole-rate and --max-holes override single knobs of the chosen regime.

examples:
  nnunetv2_topo synth --output synth_data --cases 8 --shape 96 96 96 --test-cases 2
  nnunetv2_topo synth --output crowded --cases 8 --shape 64 64 64 --regime crowded --hole-rate 0.6
"""

REGIMES = ("nominal", "crowded")
DEFAULT_SHAPE = (96, 96, 96)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="output folder (created; must not exist or be empty)")
    rename_flag(parser, "--out", "--output")
    parser.add_argument("--cases", type=int, default=8, help="number of training cases (default: %(default)s)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=list(DEFAULT_SHAPE),
        metavar=("Z", "Y", "X"),
        help=f"volume size in voxels (default: {' '.join(map(str, DEFAULT_SHAPE))}; the real data is 320 320 320)",
    )
    parser.add_argument("--test-cases", type=int, default=2, help="number of test cases (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed = same files (default: %(default)s)"
    )
    parser.add_argument(
        "--ids-from",
        metavar="CSV",
        help="reuse ids and scroll ids of the first --cases rows of a real train.csv (columns id,scroll_id)",
    )
    parser.add_argument(
        "--regime",
        choices=REGIMES,
        default="nominal",
        help="sheet topology: nominal, or crowded (near-touching sheets and holes; see above) (default: %(default)s)",
    )
    parser.add_argument("--touch-rate", type=float, help="chance that a gap is a touching pair, 0-1")
    parser.add_argument("--gap", type=float, nargs=2, metavar=("MIN", "MAX"), help="ordinary gap range in voxels")
    parser.add_argument("--hole-rate", type=float, help="chance that a sheet has holes, 0-1")
    parser.add_argument("--max-holes", type=int, help="a holed sheet has 1..MAX_HOLES holes")
    add_processes_argument(parser, "worker processes (default: %(default)s)", default=1)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.num_processes < 1:
        raise CLIError(f"-np must be >= 1, got {args.num_processes}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if min(args.shape) < 1:
        raise CLIError(f"--shape must be three positive sizes (Z Y X), got {' '.join(map(str, args.shape))}")
    check_memory(tuple(args.shape), args.num_processes)
    topology = sheet_topology(args)
    check_output_folder(args.output, args.overwrite, "--output", create=False)
    names = ("cases", "test_cases", "seed", "ids_from", "num_processes", "overwrite")
    train, test = write_kaggle_dataset(
        args.output, shape=tuple(args.shape), progress=not args.quiet, topology=topology, **arg_values(args, *names)
    )
    scrolls: dict[str, int] = {}
    for r in train:
        scrolls[r.scroll_id] = scrolls.get(r.scroll_id, 0) + 1
    per_scroll = ", ".join(f"{s}: {c}" for s, c in sorted(scrolls.items(), key=lambda kv: -kv[1]))
    print(f"wrote {len(train)} training and {len(test)} test cases to {args.output} (scrolls {per_scroll})")
    return 0


BYTES_PER_VOXEL = 16
"""Peak memory of generating one case, per voxel (measured with tracemalloc: ~15.5 B at 48^3 and 64x96x80)."""


def check_memory(shape: tuple[int, ...], processes: int, available: int | None = None) -> None:
    """Refuse a --shape whose cases cannot fit in memory (``processes`` generated at once) before allocating."""
    need = BYTES_PER_VOXEL * math.prod(shape) * processes
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        gib = 1024**3
        raise CLIError(
            f"--shape {' '.join(map(str, shape))} with -np {processes} needs about {need / gib:.1f} GiB of memory "
            f"({BYTES_PER_VOXEL} bytes per voxel per process), {available / gib:.1f} GiB are available; use a "
            "smaller --shape or fewer processes"
        )


def sheet_topology(args: argparse.Namespace) -> SheetTopology:
    """The ``SheetTopology`` of ``--regime`` with the single-knob flags applied; a bad value is a CLIError naming
    the flag."""
    base = SheetTopology.crowded() if args.regime == "crowded" else SheetTopology()
    flags = {"touch_rate": "--touch-rate", "gap": "--gap", "hole_rate": "--hole-rate", "max_holes": "--max-holes"}
    changes: dict[str, Any] = {k: tuple(v) if k == "gap" else v for k in flags if (v := getattr(args, k)) is not None}
    try:
        return dataclasses.replace(base, **changes)
    except SheetTopologyError as exc:
        raise CLIError(f"{flags[exc.field]}: {exc}") from None
