"""Learning curves on the synthetic dataset, equal iteration budget: the seed's original setting vs
``nnUNetTrainerTopoWarmup`` vs nnU-Net's ``nnUNetTrainer``.

* ``seed-original``: the TopoWarmup base trainer configured as the seed first ran (AdamW 5e-3, weight decay 1e-5,
  no warmup, clip 1.0, plateau patience 5 / factor 0.3, the seed's five loss terms),
* ``topowarmup``: ``nnUNetTrainerTopoWarmup`` with its defaults (SGD 1e-2, warmup, plateau, clip 2.0),
* ``nnunet``: ``nnUNetTrainer`` (SGD 1e-2, poly schedule, CE + Dice), the same epochs and iterations
  (``nnUNetTrainer_TopoBudget``: nnU-Net's trainer unchanged but for the budget keys of the same config file).

It runs the real commands (synth -> convert -> plan/preprocess -> optional reduced plans -> ``nnUNetv2_train``),
plots validation pseudo Dice (EMA) and the LR per epoch for the three into ``learning_curve.png``, and prints the
final pseudo Dice, nnU-Net's validation Dice and the competition score (raw) of each::

    python benchmarks/learning_curve.py --quick           # CPU: 6 cases of 32x40x36, tiny network (minutes)
    # plateau signals and weight EMA, two seeds each (number of LR cuts and final score per run):
    python benchmarks/learning_curve.py --quick --settings val_loss val_loss_ema val_loss+ema val_loss_ema+ema \
        val_score --seeds 0 1
    python benchmarks/learning_curve.py --cases 40 --shape 128 128 128 --epochs 100 --iterations 250 --device cuda \
        --plans nnUNetPlans
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PLANS_TINY = "nnUNetPlans_tiny"

SEED_ORIGINAL = {
    "optimizer": "adamw",
    "initial_lr": 5e-3,
    "weight_decay": 1e-5,
    "warmup_epochs": 0,
    "grad_clip_norm": 1.0,
    "plateau_patience": 5,
    "plateau_factor": 0.3,
}

PLATEAU_SETTINGS = ("val_loss", "val_loss_ema", "val_score")
"""Plateau signals compared by ``--settings`` (TopoWarmup defaults otherwise; patience epochs // 10). ``val_score``
scores the fold's validation cases with the competition metric every epoch (``score_every_epochs: 1``, at most
``SCORE_CASES`` cases), so its patience counts epochs too."""

SCORE_CASES = 4

CPU_LAUNCHER = (
    "import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
    "from nnunetv2.run.run_training import run_training; "
    "run_training('1', '3d_fullres', 0, sys.argv[3], sys.argv[2], device=torch.device('cpu'))"
)


class CommandFailedError(RuntimeError):
    """A benchmark step's command exited non-zero; the message names the command, its log and the log's tail."""


def run_logged(cmd: list, env: dict, log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; returns the wall seconds, raises :class:`CommandFailedError`."""
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise CommandFailedError(f"{' '.join(map(str, cmd))} failed; see {log}:\n{log.read_text()[-3000:]}")
    return time.time() - t0


def _prepare(args: argparse.Namespace, work: Path, env: dict) -> Path:
    from nnunetv2_topo.reduced_plans import make_reduced_plans

    kaggle = work / "kaggle"
    if not kaggle.exists():
        run_logged(
            [BIN / "nnunetv2_topo", "synth", "--output", kaggle, "--cases", args.cases, "--shape", *args.shape]
            + ["--test-cases", "1", "--seed", args.seed, "--quiet"],
            env,
            work / "synth.log",
        )
    pre = Path(env["nnUNet_preprocessed"]) / "Dataset001_Vesuvius"
    if not (pre / "nnUNetPlans.json").exists():
        run_logged(
            [BIN / "nnUNetv2_convert_vesuvius", "--input", kaggle, "--dataset-id", "1", "--quiet"], env, work / "c.log"
        )
        plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
        run_logged(
            [BIN / "nnUNetv2_plan_and_preprocess", "-d", "1", "-c", "3d_fullres", "-np", "1"], plan_env, work / "p.log"
        )
    if args.plans == PLANS_TINY:
        make_reduced_plans(pre, name=PLANS_TINY, features=(8, 16, 32), patch=(32, 32, 32), batch=2)
    return pre


def _fold(env: dict, trainer: str, plans: str) -> Path:
    return Path(env["nnUNet_results"]) / "Dataset001_Vesuvius" / f"{trainer}__{plans}__3d_fullres" / "fold_0"


def _score(fold: Path, pre: Path) -> float:
    """Mean competition score (raw) of the fold's validation predictions."""
    from nnunetv2_topo.evaluation.folder_scoring import score_folder

    summary = fold / "validation" / "summary_topo.json"
    if summary.exists():
        return float(json.loads(summary.read_text())["raw"]["mean"]["score"])
    raw = score_folder(fold / "validation", pre / "gt_segmentations", num_processes=0, only_predicted=True)["raw"]
    return float(raw["mean"]["score"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="benchmarks/out/learning_curve", help="work folder (reused if present)")
    parser.add_argument("--name", default="learning_curve", help="NAME.json and NAME.png in the work folder (several "
                        "invocations can share the prepared data)")  # fmt: skip
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--plans", default=PLANS_TINY, help=f"plans identifier ({PLANS_TINY} = reduced, CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU training (default: 1)")
    parser.add_argument("--quick", action="store_true", help="6 cases of 32x40x36, 8 epochs x 6 iterations")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["seed-original", "topowarmup", "nnunet"],
        help="settings to run: seed-original, topowarmup, nnunet, or a plateau signal of TopoWarmup "
        f"({', '.join(PLATEAU_SETTINGS)}) with '+ema' for weight EMA 0.999 (default: the first three)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (the 'seed' key); each "
                        "setting runs once per seed (default: unseeded, once)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.shape, args.epochs, args.iterations, args.val_iterations = 6, [32, 40, 36], 8, 6, 1

    from nnunetv2_topo.nnunet_env import NNUNET_FOLDERS, nnunet_env

    work = Path(args.work).resolve()
    for name in NNUNET_FOLDERS:
        (work / name).mkdir(parents=True, exist_ok=True)
    cpu = args.device == "cpu"
    env = nnunet_env(work, data_workers=0 if cpu else 8, processes=1 if cpu else 4)
    pre = _prepare(args, work, env)
    budget = {
        "num_epochs": args.epochs,
        "num_iterations_per_epoch": args.iterations,
        "num_val_iterations_per_epoch": args.val_iterations,
    }
    warmup = {"warmup_epochs": min(10, max(1, args.epochs // 5))}  # the default 10 scaled down for short budgets
    known = {
        "seed-original": ("nnUNetTrainerTopoWarmup", {**budget, **SEED_ORIGINAL}),
        "topowarmup": ("nnUNetTrainerTopoWarmup", {**budget, **warmup}),
        "nnunet": ("nnUNetTrainer_TopoBudget", budget),
    }
    for metric in PLATEAU_SETTINGS:
        signal = {**budget, **warmup, "plateau_metric": metric, "plateau_patience": max(1, args.epochs // 10)}
        if metric == "val_score":
            signal.update(score_every_epochs=1, score_num_cases=SCORE_CASES)
        known[metric] = ("nnUNetTrainerTopoWarmup", signal)
        known[f"{metric}+ema"] = ("nnUNetTrainerTopoWarmup", {**signal, "ema_decay": 0.999})
    unknown = [s for s in args.settings if s not in known]
    if unknown:
        raise SystemExit(f"unknown --settings {unknown}; choose from {', '.join(known)}")
    settings = {}
    for label in args.settings:
        for seed in args.seeds or [None]:
            trainer, config = known[label]
            name = label if seed is None else f"{label}@seed{seed}"
            settings[name] = (trainer, config if seed is None else {**config, "seed": seed})
    import torch

    results = {}
    for label, (trainer, config) in settings.items():
        run_env = dict(env)
        if config is not None:
            cfg = work / f"{label}.yaml"
            cfg.write_text(json.dumps(config))  # JSON is valid YAML
            run_env["nnUNet_topo_config"] = str(cfg)
        # two settings share a trainer name: keep each one's output under its label
        results_dir = work / "nnUNet_results" / label
        results_dir.mkdir(parents=True, exist_ok=True)
        run_env["nnUNet_results"] = str(results_dir)
        fold = _fold(run_env, trainer, args.plans)
        if fold.exists():
            shutil.rmtree(fold)
        if args.device == "cpu":
            # nnUNetv2_train -device cpu sets torch's threads to the core count, which oversubscribes a shared
            # machine; run nnU-Net's own run_training with --threads instead (the same code path otherwise)
            cmd = [sys.executable, "-c", CPU_LAUNCHER, args.threads, args.plans, trainer]
        else:
            cmd = [BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-p", args.plans, "-tr", trainer, "-device", "cuda"]
        print(f"training {label} ({trainer}) ...", flush=True)
        seconds = run_logged(cmd, run_env, work / f"{label}.log")
        log = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
        dice = json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
        results[label] = {
            "trainer": trainer,
            "seconds": seconds,
            "ema_fg_dice": [float(v) for v in log["ema_fg_dice"]],
            "mean_fg_dice": [float(v) for v in log["mean_fg_dice"]],
            "lrs": [float(v) for v in log["lrs"]],
            "train_losses": [float(v) for v in log["train_losses"]],
            "final_validation_dice": float(dice),
            "lr_cuts": sum(b < a for a, b in zip(log["lrs"], log["lrs"][1:])),  # warmup only rises
            "competition_score_raw": _score(fold, pre),
        }
        if "val_score" in log:  # scoring rounds: the best one (checkpoint_best_score.pth)
            scores = [(float(v), e) for e, v in enumerate(log["val_score"]) if v == v]
            results[label]["best_val_score"], results[label]["best_val_score_epoch"] = max(scores)

    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, (ax_d, ax_lr) = plt.subplots(1, 2, figsize=(13, 4.5), constrained_layout=True)
    for label, r in results.items():
        ax_d.plot(r["ema_fg_dice"], lw=2, label=f"{label} (EMA)")
        ax_d.plot(r["mean_fg_dice"], lw=1, ls=":", color=ax_d.lines[-1].get_color())
        ax_lr.plot(r["lrs"], lw=2, label=label)
    ax_d.set(title="validation pseudo Dice (dotted: per epoch)", xlabel="epoch", ylim=(0, 1))
    ax_lr.set(title="learning rate", xlabel="epoch", yscale="log")
    ax_d.legend()
    ax_lr.legend()
    png = work / f"{args.name}.png"
    fig.savefig(png, dpi=90)
    (work / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))

    print(
        f"\n{args.cases} cases {'x'.join(map(str, args.shape))}, plans {args.plans}, {args.epochs} epochs x "
        f"{args.iterations} iterations (batch 2), device {args.device}"
    )
    print(
        f"{'setting':26s} {'final EMA pseudo Dice':>22s} {'val Dice':>9s} {'score (raw)':>12s} {'LR cuts':>8s} "
        f"{'time s':>8s}"
    )
    for label, r in results.items():
        print(
            f"{label:26s} {r['ema_fg_dice'][-1]:22.4f} {r['final_validation_dice']:9.4f} "
            f"{r['competition_score_raw']:12.4f} {r['lr_cuts']:8d} {r['seconds']:8.0f}"
            + (f"  (best val_score {r['best_val_score']:.4f} at epoch {r['best_val_score_epoch']})"
               if "best_val_score" in r else "")
        )  # fmt: skip
    print(f"curves: {png}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CommandFailedError as exc:
        sys.exit(str(exc))
