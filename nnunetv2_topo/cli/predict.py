"""``nnunetv2_topo predict``: trained models -> fused, post-processed predictions or a submission.zip."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunetv2_topo.cli.model_options import device as model_device
from nnunetv2_topo.cli.model_options import load_config, resolve_models
from nnunetv2_topo.cli.postprocess import warn_stale
from nnunetv2_topo.cli.predict_scroll import add_volume_arguments, is_volume_run, path_or_url, run_volume
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.inference.cases import (
    PART_MANIFEST,
    check_part,
    index_input_images,
    iter_part_volumes,
    merged_part_files,
    split_part,
    write_part_manifest,
)
from nnunetv2_topo.inference.models import use_topo_trainers
from nnunetv2_topo.inference.predict import TTA_MODES, RunReport, load_models, predict_cases
from nnunetv2_topo.input_checks import test_image_problems, training_intensities
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.output_checks import check_output_file, check_output_folder
from nnunetv2_topo.postprocessing.fusion import FUSION_MODES
from nnunetv2_topo.submission import check_ids, read_test_ids, write_volumes_zip

HELP = "predict with one or more trained nnU-Net models, fused in memory, into <id>.tif files or a submission.zip"
DESCRIPTION = """\
Predict every volume of --input with each --model (nnU-Net's own preprocessing and sliding window, the folds'
logits averaged as nnUNetv2_predict does), fuse the models' binary logits l1 - l0 in memory (--fusion, --weights),
then threshold at 0.5 or run the post-processing of --config. Nothing but the final volumes is written.

  --input    Kaggle's test_images/ (<id>.tif) or nnU-Net's imagesTs/ (<id>_0000.tif)
  --output   a folder (one uint8 <id>.tif per case) or a .zip (a checked Kaggle submission)
  --model    a trained-model folder <trainer>__<plans>__<configuration> (repeat for several models)
  --tta      none | mirror (nnU-Net's 8 mirrorings, its default) | mirror+rot90 (16 views: also 90 degrees about z;
             twice the work, and it did not raise the score in benchmarks/RESULTS.md)

Several machines: run with --num-parts N --part-id K into one folder per part (cases split as nnU-Net's
-num_parts/-part_id do), then join them: nnunetv2_topo predict --merge PART_DIR ... --output submission.zip

Example (Kaggle notebook):
  nnunetv2_topo predict --input test_images --output submission.zip --csv test.csv \\
      --model results/Dataset100_Vesuvius/nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres --folds 0 \\
      --config postprocess.json --time-budget-hours 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=path_or_url, help="folder of test volumes (<id>.tif or <id>_0000.tif), or a "
                        "Zarr/OME-Zarr volume (path or fsspec URL)")  # fmt: skip
    parser.add_argument("--output", type=path_or_url, required=True,
                        help="output folder, a .zip for a submission, or OUT.zarr for a volume")  # fmt: skip
    parser.add_argument("--model", type=Path, action="append", default=[], help="trained-model folder (repeatable)")
    parser.add_argument(
        "--folds", nargs="+", help="folds to use in every model (default: every fold with a checkpoint)"
    )
    parser.add_argument(
        "--checkpoint",
        help="checkpoint file of every model (default: per model the --config file's fusion.checkpoints, else "
        "checkpoint_final.pth)",
    )
    parser.add_argument("--weights", type=float, nargs="+", help="one fusion weight per --model (default: equal)")
    parser.add_argument("--fusion", choices=FUSION_MODES, help="fuse logits (default) or probabilities")
    parser.add_argument(
        "--tta", choices=TTA_MODES, default="mirror", help="test-time augmentation (default %(default)s)"
    )
    parser.add_argument("--config", type=Path, help="postprocess.json (from tune): fusion and post-processing steps")
    parser.add_argument("--csv", type=Path, help="test.csv: check that the input's cases are exactly its ids")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    parser.add_argument("--num-parts", type=int, default=1, help="split the cases into N parts (default %(default)s)")
    parser.add_argument("--part-id", type=int, default=0, help="the part to predict, 0..N-1 (default %(default)s)")
    parser.add_argument("--time-budget-hours", type=float, help="warn when the ETA exceeds it; past it, no TTA")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PART_DIR", help="join part folders into --output")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output .zip, or write into a non-empty output folder (replacing <id>.tif files); "
        "an OUT.zarr made with other settings is replaced only after every check passed (never the work of "
        "another --num-parts part of the same settings)",
    )
    parser.add_argument(
        "--allow-intensity-mismatch",
        action="store_true",
        help="predict test images whose intensities lie outside the model's training range (warn instead of refuse)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--log-cases",
        action="store_true",
        help="print one line per finished case (id, seconds, TTA used or dropped to fit --time-budget-hours), "
        "for logs where a progress bar is unreadable (Kaggle's notebook log)",
    )
    add_volume_arguments(parser)


def _check_output(args: argparse.Namespace) -> bool:
    """True for a zip output; refuses an existing zip without --overwrite and a zip for one part of several."""
    is_zip = args.output.suffix.lower() == ".zip"
    if is_zip and args.num_parts > 1:
        raise CLIError("--num-parts > 1 writes one folder per part; pass a folder as --output and join the parts "
                       "with --merge PART_DIR ... --output submission.zip")  # fmt: skip
    if is_zip:
        check_output_file(args.output, args.overwrite, "--output", "submission.zip")
    else:
        check_output_folder(args.output, args.overwrite, "--output", create=False)
    return is_zip


def _check_intensities(args: argparse.Namespace, folders, part) -> None:
    """Test images outside the models' training intensities (dataset fingerprint): refused, or with
    --allow-intensity-mismatch a warning per case."""
    problems = test_image_problems([(c.id, c.image) for c in part], [training_intensities(f.path) for f in folders])
    if not problems:
        return
    if not args.allow_intensity_mismatch:
        more = f" (and {len(problems) - 3} more case(s))" if len(problems) > 3 else ""
        raise CLIError(
            "; ".join(problems[:3]) + more + ". Predictions on such images are unreliable: rescale the images, or "
            "add --allow-intensity-mismatch to predict them anyway"
        )
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)


def _merge(args: argparse.Namespace) -> int:
    extra = [f"--{k.replace('_', '-')}" for k in ("input", "config", "folds", "weights", "fusion") if getattr(args, k)]
    if args.model or extra:
        raise CLIError(f"--merge only joins finished parts; drop {', '.join(extra + ['--model'] * bool(args.model))}")
    if args.output.suffix.lower() != ".zip":
        raise CLIError(f"--merge writes a submission: --output must end in .zip, got {args.output}")
    check_output_file(args.output, args.overwrite, "--output", "submission.zip")
    files = merged_part_files(args.merge)
    ids = list(files)
    if args.csv is not None:
        check_ids(read_test_ids(args.csv), ids, args.csv, kind="input volume")
    out = write_volumes_zip(args.output, ids, iter_part_volumes(files))
    print(f"wrote {out} ({len(ids)} case(s) from {len(args.merge)} part(s))")
    return 0


@dataclass
class _Plan:
    """What the checks found: the work of this part, and where it goes."""

    folders: list
    mode: str
    weights: tuple[float, ...]
    config: Any
    cases: list
    part: list
    is_zip: bool


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args)

    if is_volume_run(args):
        return run_volume(args)
    plan = _check(args)
    device = model_device(args.device)
    _check_intensities(args, plan.folders, plan.part)
    volumes, report = _predict(args, plan, device)
    _write(args, plan, volumes)
    _report(args, plan, report)
    return 0


def _check(args: argparse.Namespace) -> _Plan:
    """Every check before any work: flags, output, input cases (against --csv), --config and the models."""
    if args.input is None or not args.model:
        raise CLIError("--input and at least one --model are required (or --merge PART_DIR ... to join parts)")
    if args.time_budget_hours is not None and not args.time_budget_hours > 0:
        raise CLIError(f"--time-budget-hours must be > 0, got {args.time_budget_hours}")
    check_part(args.num_parts, args.part_id)
    is_zip = _check_output(args)
    cases = index_input_images(args.input)
    if args.csv is not None:
        check_ids(read_test_ids(args.csv), [c.id for c in cases], args.csv, kind="input volume")
    config = load_config(args)
    folders, mode, weights = resolve_models(args, config)
    part = split_part(cases, args.num_parts, args.part_id)
    return _Plan(folders, mode, weights, config, cases, part, is_zip)


def _predict(args: argparse.Namespace, plan: _Plan, device):
    """``(volumes, report)``: the models loaded, and the lazy stream of this part's final
    volumes (each predicted, fused and post-processed when it is written)."""
    use_topo_trainers()
    models = load_models(plan.folders, plan.weights, device, progress=not args.quiet)
    if not args.quiet:
        steps = f"post-processing {args.config}" if plan.config else "threshold 0.5"
        print(f"{len(plan.part)} case(s), {len(models)} model(s), fusion {plan.mode}, TTA {args.tta}, device "
              f"{device}, {steps}", file=sys.stderr)  # fmt: skip
    report = RunReport()
    volumes = predict_cases(
        models, plan.part, args.tta, plan.mode, None if plan.config is None else plan.config.steps, report,
        budget_hours=args.time_budget_hours, progress=not args.quiet,
        log_case=(lambda line: print(line, file=sys.stderr, flush=True)) if args.log_cases else None,
    )  # fmt: skip
    return volumes, report


def _write(args: argparse.Namespace, plan: _Plan, volumes) -> None:
    """The volumes into the checked zip, or one <id>.tif each into the folder (with the part's manifest)."""
    if plan.is_zip:
        write_volumes_zip(args.output, [c.id for c in plan.part], volumes)
        return
    args.output.mkdir(parents=True, exist_ok=True)
    if args.num_parts > 1:
        write_part_manifest(args.output, [c.id for c in plan.cases], args.num_parts, args.part_id)
    for cid, mask in volumes:
        write_tiff(args.output / f"{cid}.tif", mask)


def _report(args: argparse.Namespace, plan: _Plan, report) -> None:
    print(report.summary(args.tta, args.time_budget_hours))
    print(f"wrote {args.output}")
    if not plan.is_zip:
        warn_stale(args.output, [f"{c.id}.tif" for c in plan.part] + [PART_MANIFEST])
