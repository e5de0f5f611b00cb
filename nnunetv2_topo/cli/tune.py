"""``nnunetv2_topo tune``: choose the post-processing by the exact competition score on cases with ground truth."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from nnunetv2_topo.cli.arguments import add_processes_argument, rename_flag
from nnunetv2_topo.cli.postprocess import add_input_arguments, resolve_fusion
from nnunetv2_topo.errors import CLIError, TopoError
from nnunetv2_topo.io import index_volumes
from nnunetv2_topo.machine import cpu_cores
from nnunetv2_topo.output_checks import check_output_file
from nnunetv2_topo.postprocessing.config_file import check_checkpoint_names
from nnunetv2_topo.postprocessing.probabilities import index_cases, model_checkpoints, paired_cases, validation_folder
from nnunetv2_topo.tuning import CaseSource, tune
from nnunetv2_topo.tuning.ensemble import DEFAULT_WEIGHT_GRID, EnsembleSpace, describe_fusion
from nnunetv2_topo.tuning.report import REPORT_MD, REPORT_PNG, ablation_table
from nnunetv2_topo.tuning.space import describe

HELP = "choose post-processing settings by the exact competition score (writes postprocess.json)"
DESCRIPTION = """\
Search the post-processing steps and their parameters to maximise the mean exact competition score over the
cases that have ground truth, and write the best steps to the post-processing file --output (postprocess.json,
read by `nnunetv2_topo postprocess`/`submit`/`predict --config`), with tune_report.md and tune_report.png beside it.

Inputs: each --input is a folder of probability maps (nnU-Net <case>.npz from --save_probabilities or --npz,
float TIFF/NIfTI maps in [0, 1], or binary segmentations) or an nnU-Net trained-model folder (the .npz of its
fold_*/validation/ are pooled: out-of-fold predictions of checkpoint_final.pth; fold_*/validation_<name>/ hold
those of checkpoint_<name>.pth). Every input must hold the same cases; every case needs ground truth in --gt
(which may hold more cases, e.g. nnU-Net's gt_segmentations).

Ensemble: with several inputs and no --weights, the weights are searched too (simplex grid of step
1/--weight-grid plus equal weights over every subset; weight 0 = the model takes no part), and without --fusion
the fusion (logit/prob); per model folder the checkpoint (--checkpoints, default: every one with out-of-fold
predictions). Each candidate is scored at every threshold of the grid. The choice is written into
postprocess.json's fusion (weights, mode, checkpoints), read by postprocess, submit and predict.

Strategy: coordinate descent over grids from the defaults: threshold first, then in the steps' fixed order
(STEP_ORDER) the hysteresis high threshold, dust size, 1-voxel plugging and its method, height-map patching,
closing radii (z, yx) and cavity filling, repeated until a round changes nothing. Betti-matching counts are cached
per (case, tile, content of the prediction tile): a setting that leaves a tile unchanged does not run the
engine again. The report gives the ablation table (none -> + each step), the in-sample gain over the defaults and
a cross-validated one (chosen on some cases, scored on the others), and per searched coordinate the chosen value
against the runner-up: paired difference over cases with a bootstrap 95 % interval, how often the choice wins in
bootstrap resamples, the cross-validated gain; a choice whose interval includes 0 is marked "within noise"; plus
the score without each model. Ctrl-C or --time-budget-minutes stop the search with the best setting so far written.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)

    parser.add_argument(
        "--checkpoints",
        nargs="+",
        metavar="C",
        help="one per --input: checkpoint_<name>.pth fixes which out-of-fold predictions of a model folder are used "
        "(fold_*/validation/ = checkpoint_final.pth, fold_*/validation_<name>/ = checkpoint_<name>.pth); 'all' "
        "searches every one the folder holds (default; a folder of maps takes 'all')",
    )
    parser.add_argument(
        "--weight-grid",
        type=int,
        default=None,
        metavar="N",
        help=f"searched weights are multiples of 1/N (default {DEFAULT_WEIGHT_GRID}), plus equal weights over "
        "every subset of the inputs; not with --weights",
    )
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label volumes (2 = ignore)")
    parser.add_argument("--output", required=True, type=Path, help="postprocess.json to write")
    add_processes_argument(
        parser, "worker processes (default: CPU cores, at most one per case; 0 = everything in this process)"
    )
    parser.add_argument("--time-budget-minutes", type=float, metavar="MIN", help="stop the search after MIN minutes")
    rename_flag(parser, "--time-budget", "--time-budget-minutes")
    parser.add_argument(
        "--cv-folds", type=int, default=2, help="folds of the cross-validated gain estimate (default %(default)s)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output and the tune_report.md/.png beside it"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _gt_files(gt_dir: Path) -> dict[str, Path]:
    return index_volumes(gt_dir, "--gt", CLIError, required=True)


def _checkpoint_options(args: argparse.Namespace) -> list[tuple[str | None, ...]]:
    """Per --input, the checkpoints to choose from (``(None,)`` for a folder of maps)."""
    wanted = args.checkpoints or ["all"] * len(args.input)
    if len(wanted) != len(args.input):
        raise CLIError(f"{len(wanted)} --checkpoints for {len(args.input)} --input(s); give one per --input, in order")
    out: list[tuple[str | None, ...]] = []
    for path, want in zip(args.input, wanted, strict=True):
        have = model_checkpoints(path) if path.is_dir() else []
        if want == "all":
            out.append(tuple(have) or (None,))
            continue
        try:
            check_checkpoint_names([want], 1)
        except ValueError as exc:
            raise CLIError(f"--checkpoints {want}: {exc}, or 'all'") from None
        if not have:
            raise CLIError(f"--checkpoints {want}: {path} is not a model folder (no fold_*/validation*/); give 'all'")
        if want not in have:
            raise CLIError(
                f"--checkpoints {want}: {path} has no fold_*/{validation_folder(want)}/ (out-of-fold predictions "
                f"of {', '.join(have)} only)"
            )
        out.append((want,))
    return out


def _sources(args: argparse.Namespace, fusion, options: list[tuple[str | None, ...]]) -> list:
    cases = paired_cases(args.input, [o[0] for o in options])
    variants = [
        {c: index_cases(path, c) for c in opts} if opts != (None,) else {}
        for path, opts in zip(args.input, options, strict=True)
    ]
    for path, by_checkpoint in zip(args.input, variants, strict=True):
        for checkpoint, index in by_checkpoint.items():
            missing = sorted(set(cases) - set(index))
            if missing:
                raise CLIError(
                    f"{path}: the out-of-fold predictions of {checkpoint} lack case(s) {', '.join(missing[:10])}; "
                    f"predict them for every fold or fix this model's checkpoint with --checkpoints"
                )
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
    return [
        CaseSource(
            c,
            tuple(paths),
            gts[c],
            fusion.mode,
            fusion.weights,
            tuple(tuple((k, index[c]) for k, index in v.items()) for v in variants),
        )
        for c, paths in cases.items()
    ]


def run(args: argparse.Namespace) -> int:
    _, fusion, _ = resolve_fusion(args)
    _check_flags(args)
    options = _checkpoint_options(args)
    sources = _sources(args, fusion, options)
    ensemble = EnsembleSpace(
        weights=args.weights is None,
        fusion=args.fusion is None,
        checkpoints=tuple(options) if any(o != (None,) for o in options) else (),
        weight_grid=args.weight_grid or DEFAULT_WEIGHT_GRID,
    )
    processes = min(len(sources), cpu_cores()) if args.num_processes is None else args.num_processes
    budget = args.time_budget_minutes
    try:
        outcome = tune(
            sources,
            args.output,
            fusion,
            gt=str(args.gt),
            num_processes=processes,
            time_budget_s=None if budget is None else budget * 60,
            cv_folds=args.cv_folds,
            progress=not args.quiet,
            ensemble=ensemble,
        )
    except ValueError as exc:
        if isinstance(exc, TopoError):
            raise
        raise CLIError(str(exc)) from exc
    _report(args, outcome)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """The search's flags and its outputs (postprocess.json and the reports beside it)."""
    if args.weight_grid is not None and args.weights is not None:
        raise CLIError("--weight-grid sets the grid of searched weights; --weights fixes them: drop one of the two")
    if args.weight_grid is not None and not 1 <= args.weight_grid <= 20:
        raise CLIError(f"--weight-grid must be an integer from 1 to 20, got {args.weight_grid}")
    budget = args.time_budget_minutes
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise CLIError(f"--time-budget-minutes must be a positive number, got {budget}")
    if args.cv_folds < 2:
        raise CLIError(f"--cv-folds must be at least 2, got {args.cv_folds}")
    if args.num_processes is not None and args.num_processes < 0:
        raise CLIError(f"-np must be >= 0, got {args.num_processes}")
    check_output_file(args.output, args.overwrite, "--output", "postprocess.json")
    for name in (REPORT_MD, REPORT_PNG):  # written beside it: the same rule
        check_output_file(args.output.parent / name, args.overwrite, f"--output's report {name}:")


def _report(args: argparse.Namespace, outcome) -> None:
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
    for row in s.get("stability", []):
        d = row["difference"]
        lo, hi = d["ci"]
        print(
            f"{row['axis']}: {row['chosen']} vs {row['runner_up']} {d['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}], "
            f"wins {row['win_rate']:.0%} of resamples{' (within noise)' if d['includes_zero'] else ''}"
        )
    print(f"best: {describe_fusion(outcome.fusion)}; {describe(outcome.best)} ({s['status']})")
    print(f"wrote {', '.join(str(p) for p in (args.output, outcome.report_md, outcome.report_png) if p)}")
