"""``nnunetv2_topo submit``: build and check submission.zip."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write submission.zip (one uint8 0/1 <id>.tif per test id), with every check first"
DESCRIPTION = """\
Write the Kaggle submission: one <id>.tif per id of test.csv, uint8 with values 0/1, each the shape of the test
image <id>.tif. Refuses with a clear message (and writes nothing) on a missing id, an extra prediction file, a
shape that differs from the test image, or non-binary values (use --binarize to map non-zero to 1; float
probabilities: > 0.5).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="folder of predictions <id>.tif / .nii.gz")
    parser.add_argument("--images", required=True, type=Path, help="folder of test images (for the shapes)")
    parser.add_argument("--csv", required=True, type=Path, help="test.csv with an 'id' column")
    parser.add_argument(
        "--out", type=Path, default=Path("submission.zip"), help="zip to write (default submission.zip)"
    )
    parser.add_argument("--binarize", action="store_true", help="accept non-binary predictions: non-zero -> 1")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.submission import SubmissionError, write_submission

    if args.out.exists() and not args.overwrite:
        raise CLIError(f"{args.out} exists; add --overwrite to replace it")
    try:
        out = write_submission(args.pred, args.images, args.csv, args.out, binarize=args.binarize)
    except SubmissionError as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {out}")
    return 0
