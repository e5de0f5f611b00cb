"""``nnunetv2_topo submit``: build and check submission.zip."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nnunetv2_topo.cli.arguments import rename_flag
from nnunetv2_topo.cli.postprocess import STEP_FLAGS, add_probability_arguments, resolve_options
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.output_checks import check_output_file
from nnunetv2_topo.postprocessing import postprocess_volume
from nnunetv2_topo.postprocessing.probabilities import ProbabilityError, fuse_probability_files, paired_cases
from nnunetv2_topo.submission import SubmissionError, write_checked_submission, write_submission

HELP = "write submission.zip (one uint8 0/1 <id>.tif per test id), with every check first"
DESCRIPTION = """\
Write the Kaggle submission: one <id>.tif per id of test.csv, uint8 with values 0/1, each the shape of the test
image <id>.tif. Two routes:
  --binary-input DIR         binary predictions (e.g. the output of nnunetv2_topo postprocess)
  --input DIR [--input DIR]  probability maps of one or several models (nnU-Net <case>.npz from
                             nnUNetv2_predict --save_probabilities, float maps), fused and post-processed here,
                             with --config postprocess.json from nnunetv2_topo tune and/or the step flags
Refuses with a clear message (and writes nothing) on a missing id, an extra prediction file, a shape that differs
from the test image, or non-binary --binary-input values (use --binarize to map non-zero to 1; floats: > 0.5).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--binary-input", type=Path, metavar="DIR", help="folder of binary predictions <id>.tif / .nii.gz"
    )
    rename_flag(parser, "--pred", "--binary-input")
    parser.add_argument("--images", required=True, type=Path, help="folder of test images (for the shapes)")
    parser.add_argument("--csv", required=True, type=Path, help="test.csv with an 'id' column")
    parser.add_argument(
        "--output", type=Path, default=Path("submission.zip"), help="zip to write (default %(default)s)"
    )
    rename_flag(parser, "--out", "--output")
    parser.add_argument(
        "--binarize", action="store_true", help="--binary-input: accept non-binary values: non-zero -> 1"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_probability_arguments(parser, input_required=False)


def run(args: argparse.Namespace) -> int:
    if (args.binary_input is None) == (args.input is None):
        raise CLIError("give either --binary-input (binary predictions) or --input (probability maps, once per model)")
    if args.binary_input is not None:
        probability_only = [f for f, (_, dest) in STEP_FLAGS.items() if getattr(args, dest) is not None]
        probability_only += [f for f in ("--config", "--weights", "--fusion") if getattr(args, f[2:]) is not None]
        if probability_only:
            raise CLIError(
                f"{', '.join(probability_only)} apply to --input probability maps, not to --binary-input binary "
                "predictions"
            )
    elif args.binarize:
        raise CLIError("--binarize applies to --binary-input; --input probability maps are post-processed into 0/1")
    check_output_file(args.output, args.overwrite, "--output", "submission.zip")
    if args.binary_input is not None:
        out = write_submission(args.binary_input, args.images, args.csv, args.output, binarize=args.binarize)
    else:
        inputs, fusion, steps, notes = resolve_options(args)
        for note in notes:
            print(note)
        out = _from_probabilities(inputs, fusion, steps, args)
    print(f"wrote {out}")
    return 0


def _from_probabilities(inputs, fusion, steps, args: argparse.Namespace) -> Path:
    """Fuse the inputs' probabilities per test id, post-process with ``steps``, check and write the zip."""
    cases = paired_cases(inputs, fusion.checkpoints)

    def produce(cid: str) -> np.ndarray:
        try:
            probability = fuse_probability_files(cases[cid], fusion.weights, fusion.mode)
        except ProbabilityError as exc:
            raise SubmissionError(f"id {cid}: {exc}") from exc
        return postprocess_volume(probability, steps)

    sources = {cid: paths[0] for cid, paths in cases.items()}
    where = ", ".join(str(p) for p in inputs)
    return write_checked_submission(args.csv, args.images, args.output, sources, produce, where)
