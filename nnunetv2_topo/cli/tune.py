"""``nnunetv2_topo tune``: choose the post-processing by the exact competition score on cases with ground truth."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HELP = "choose post-processing settings by the exact competition score (writes postprocess.json)"
DESCRIPTION = """\
Search the post-processing steps and their parameters to maximise the mean exact competition score over the
cases that have ground truth, and write the best configuration to --output (postprocess.json, read by
`nnunetv2_topo postprocess`/`submit`), with tune_report.md and tune_report.png beside it.

Inputs: each --input is a folder of probability maps (nnU-Net <case>.npz from --save_probabilities or --npz,
float TIFF/NIfTI maps in [0, 1], or binary segmentations) or an nnU-Net trained-model folder (the .npz of its
fold_*/validation/ are pooled: out-of-fold predictions). With several inputs the maps are fused (--fusion,
--weights). Every input must hold the same cases; every case needs ground truth in --gt (which may hold more
cases, e.g. nnU-Net's gt_segmentations).

Strategy: coordinate descent over grids from the defaults: threshold first, then in the steps' fixed order
(STEP_ORDER) the hysteresis high threshold, dust size, 1-voxel plugging and its method, height-map patching,
closing radii (z, yx) and cavity filling, repeated until a round changes nothing. Betti-matching counts are cached
per (case, tile, content of the prediction tile): a configuration that leaves a tile unchanged does not run the
engine again. The report gives the ablation table (none -> + each step), the in-sample gain over the defaults and
a cross-validated one (chosen on some cases, scored on the others). Ctrl-C or --time-budget stop the search with
the best configuration so far written.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunetv2_topo.cli.postprocess import add_input_arguments

    add_input_arguments(parser)
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label volumes (2 = ignore)")
    parser.add_argument("--output", required=True, type=Path, help="postprocess.json to write")
    parser.add_argument(
        "-np",
        "--num-processes",
        type=int,
        default=None,
        help="worker processes (default: CPU cores, at most one per case; 0 = everything in this process)",
    )
    parser.add_argument("--time-budget", type=float, default=None, help="stop the search after MIN minutes")
    parser.add_argument(
        "--cv-folds", type=int, default=2, help="folds of the cross-validated gain estimate (default 2)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output and the tune_report.md/.png beside it"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _gt_files(gt_dir: Path) -> dict[str, Path]:
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.io import case_id, is_volume_file

    if not gt_dir.is_dir():
        raise CLIError(f"--gt {gt_dir} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(gt_dir.iterdir()):
        if path.is_file() and is_volume_file(path):
            if case_id(path) in found:
                raise CLIError(f"--gt {gt_dir} holds two files for case '{case_id(path)}'; keep one")
            found[case_id(path)] = path
    if not found:
        raise CLIError(f"--gt {gt_dir} holds no label volumes (.tif, .tiff, .nii, .nii.gz)")
    return found


def _sources(args: argparse.Namespace, fusion) -> list:
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.inference.probabilities import ProbabilityError, paired_cases
    from nnunetv2_topo.tuning import CaseSource

    try:
        cases = paired_cases(args.input)
    except ProbabilityError as exc:
        raise CLIError(str(exc)) from exc
    gts = _gt_files(args.gt)
    missing = sorted(set(cases) - set(gts))
    if len(missing) == len(cases):
        raise CLIError(
            f"no common cases: none of the {len(cases)} case(s) of --input (e.g. {missing[0]}) has ground truth in "
            f"--gt {args.gt} (files pair by the name before the first '.')"
        )
    if missing:
        raise CLIError(
            f"{len(missing)} case(s) of --input have no ground truth in --gt {args.gt}: {', '.join(missing[:10])}"
        )
    return [CaseSource(c, tuple(paths), gts[c], fusion.mode, fusion.weights) for c, paths in cases.items()]


def run(args: argparse.Namespace) -> int:
    import os

    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.cli.postprocess import resolve_fusion
    from nnunetv2_topo.outputs import check_output_file
    from nnunetv2_topo.tuning import tune
    from nnunetv2_topo.tuning.report import REPORT_MD, REPORT_PNG, ablation_table
    from nnunetv2_topo.tuning.space import describe

    _, fusion, _ = resolve_fusion(args)
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise CLIError(f"--time-budget must be a positive number of minutes, got {args.time_budget}")
    if args.cv_folds < 2:
        raise CLIError(f"--cv-folds must be at least 2, got {args.cv_folds}")
    if args.num_processes is not None and args.num_processes < 0:
        raise CLIError(f"-np must be >= 0, got {args.num_processes}")
    check_output_file(args.output, args.overwrite, "--output", "postprocess.json")
    for name in (REPORT_MD, REPORT_PNG):  # written beside it: the same rule
        check_output_file(args.output.parent / name, args.overwrite, f"--output's report {name}:")
    sources = _sources(args, fusion)
    np_ = args.num_processes
    if np_ is None:
        np_ = min(len(sources), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    try:
        outcome = tune(
            sources,
            args.output,
            fusion,
            gt=str(args.gt),
            num_processes=np_,
            time_budget_s=None if args.time_budget is None else args.time_budget * 60,
            cv_folds=args.cv_folds,
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    s = outcome.summary
    if outcome.ablation:
        print(ablation_table(outcome.ablation))
    print(f"argmax {s['score_argmax']:.4f}, default postprocess {s['score_default']:.4f}, tuned {s['score_tuned']:.4f}")
    if s["cross_validated"] is not None:
        cv = s["cross_validated"]
        print(f"cross-validated ({cv['folds']} folds): {cv['heldout_score']:.4f} (gain over default {cv['gain']:+.4f})")
    cache = s["tile_cache"]
    print(
        f"{s['configurations_evaluated']} configurations on {len(s['cases'])} case(s) in {s['seconds']:.0f} s; "
        f"tile cache hit rate {cache['hit_rate']:.1%} ({cache['hits']} hits, {cache['computed']} computed)"
    )
    print(f"best: {describe(outcome.best)} ({s['status']})")
    print(f"wrote {', '.join(str(p) for p in (args.output, outcome.report_md, outcome.report_png) if p)}")
    return 0
