"""``nnunetv2_topo plot FOLD_DIR``: re-draw ``progress_topo.png`` of a TopoWarmup training."""

from __future__ import annotations

import argparse

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
    parser.add_argument("-o", "--out", help="output PNG (default: FOLD_DIR/progress_topo.png)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunetv2_topo.errors import CLIError
    from nnunetv2_topo.trainers.diagnostics import PROGRESS_PNG, load_progress, plot_progress_topo

    try:
        log, source = load_progress(args.fold_dir)
    except FileNotFoundError as exc:
        raise CLIError(f"{exc}. Pass the fold_X folder of a training (it holds training_log_*.txt).") from None
    if not log.get("train_losses"):
        raise CLIError(f"{source}: the log holds no finished epoch yet; nothing to plot")
    out = Path(args.out) if args.out else Path(args.fold_dir) / PROGRESS_PNG
    if not out.parent.is_dir():
        raise CLIError(f"--out {out}: folder {out.parent} does not exist")
    plot_progress_topo(log, out)
    print(f"wrote {out} ({len(log['train_losses'])} epochs, from {source})")
    return 0
