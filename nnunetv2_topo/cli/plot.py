"""``nnunetv2_topo plot FOLD_DIR``: re-draw ``progress_topo.png`` of a TopoWarmup training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunetv2_topo.cli.arguments import rename_flag
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.output_checks import check_output_file

HELP = "re-draw progress_topo.png (per-term losses, LR, gradient norm, pseudo Dice) of a training fold"
DESCRIPTION = f"""{HELP}.

Reads the training log of FOLD_DIR (an nnU-Net output folder such as
$nnUNet_results/Dataset001_Vesuvius/nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres/fold_0): progress_topo.json,
written every epoch by the TopoWarmup trainers, or else the newest checkpoint_{{latest,final,best}}.pth (which also
works for folds trained with nnU-Net's own trainers: totals, LR and pseudo Dice only).

Panels: loss per term (solid train, dashed validation) with the totals; learning rate on a log axis; total
gradient norm before clipping (mean and max per epoch, skipped non-finite steps as bars); validation pseudo Dice.

example:
  nnunetv2_topo plot $nnUNet_results/Dataset001_Vesuvius/nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres/fold_0
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fold_dir", metavar="FOLD_DIR", help="the fold_X folder of a training")
    parser.add_argument(
        "-o",
        "--output",
        help="output PNG (default: FOLD_DIR/progress_topo.png, which the trainer redraws every epoch and plot "
        "replaces; another existing file needs --overwrite)",
    )
    rename_flag(parser, "--out", "--output")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")


def run(args: argparse.Namespace) -> int:
    from nnunetv2_topo.trainers.diagnostics import PROGRESS_JSON, PROGRESS_PNG, load_progress, plot_progress_topo

    bad = Path(args.fold_dir) / PROGRESS_JSON
    try:
        try:
            log, source = load_progress(args.fold_dir)
        except ValueError as exc:
            if not str(exc).startswith(str(bad)):
                raise
            # a truncated or corrupt progress_topo.json: say so, and read the checkpoints instead
            print(f"warning: {exc}; reading the log from the checkpoints instead", file=sys.stderr)
            try:
                log, source = load_progress(args.fold_dir, use_json=False)
            except FileNotFoundError:
                raise CLIError(
                    f"{exc}, and {args.fold_dir} holds no checkpoint_{{latest,final,best}}.pth to read the log from"
                ) from None
    except FileNotFoundError as exc:
        raise CLIError(f"{exc}. Pass the fold_X folder of a training (it holds training_log_*.txt).") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if not log.get("train_losses"):
        raise CLIError(f"{source}: the log holds no finished epoch yet; nothing to plot")
    default_out = Path(args.fold_dir) / PROGRESS_PNG
    out = Path(args.output) if args.output else default_out
    # the default file is the trainer's own view of the same log: redrawn without asking
    check_output_file(out, args.overwrite or out == default_out, "--output", PROGRESS_PNG)
    plot_progress_topo(log, out)
    print(f"wrote {out} ({len(log['train_losses'])} epochs, from {source})")
    return 0
