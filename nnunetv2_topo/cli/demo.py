"""``nnunetv2_topo demo``: the whole pipeline on a synthetic dataset, one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunetv2_topo.cli.arguments import add_processes_argument, arg_values
from nnunetv2_topo.demo import Demo, DemoOptions
from nnunetv2_topo.errors import CLIError

HELP = "run the end-to-end pipeline (synth → convert → plan → train → predict → post-process → evaluate → submit)"
DESCRIPTION = f"""{HELP}.

Everything happens in --work (default demo_work/): the synthetic Kaggle-layout data, nnU-Net's raw, preprocessed
and results folders, predictions, logs/ (one log per stage) and submission.zip. Re-running replaces a previous demo
folder cleanly (or reuses it with --reuse); a non-empty folder that is not a demo folder is never touched.

On a CPU-only machine the demo uses reduced plans (few features, small patches) and a short schedule so it finishes
in minutes; with a GPU it uses nnU-Net's default plans. nnU-Net's own trainer is trained on the same budget and
shown side by side unless --no-baseline.
"""


DEFAULT_SHAPE = (64, 64, 64)


def _shown(shape: tuple[int, ...]) -> str:
    return " ".join(map(str, shape))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work", type=Path, default=Path("demo_work"), help="work folder (default: %(default)s)")
    parser.add_argument("--cases", type=int, default=10, help="synthetic training cases (default: %(default)s)")
    parser.add_argument("--test-cases", type=int, default=2, help="synthetic test cases (default: %(default)s)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=DEFAULT_SHAPE,
        metavar=("Z", "Y", "X"),
        help=f"volume shape (default: {_shown(DEFAULT_SHAPE)})",
    )
    parser.add_argument("--epochs", type=int, default=25, help="training epochs per trainer (default: %(default)s)")
    parser.add_argument(
        "--iterations", type=int, default=25, help="training iterations per epoch (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--dataset-id", type=int, default=990, help="nnU-Net dataset id (default: %(default)s)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: cuda when available, else cpu (default: %(default)s)",
    )
    add_processes_argument(parser, "worker processes (default: %(default)s)", default=2)
    parser.add_argument("--no-baseline", action="store_true", help="skip training nnU-Net's own trainer")
    parser.add_argument("--reuse", action="store_true", help="keep an existing demo folder instead of replacing it")


def run(args: argparse.Namespace) -> int:
    for name in ("cases", "test_cases", "epochs", "iterations", "num_processes"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.cases < 2:
        raise CLIError("--cases must be at least 2 (nnU-Net needs a training and a validation case)")
    if min(args.shape) < 16:
        raise CLIError(f"--shape must be at least 16 voxels per axis, got {tuple(args.shape)}")
    names = ("work", "cases", "test_cases", "seed", "dataset_id", "epochs", "iterations", "device", "num_processes")
    opts = DemoOptions(
        shape=tuple(args.shape),
        warmup_epochs=max(1, min(5, args.epochs // 5)),
        baseline=not args.no_baseline,
        reuse=args.reuse,
        **arg_values(args, *names),
    )
    return Demo(opts).run()
