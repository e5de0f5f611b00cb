"""The trainer variants against nnU-Net's ``nnUNetTrainer`` on the competition score: same synthetic data, plans and
iteration budget, several seeds, two data regimes, scored at argmax and after tuning each model's post-processing
on its own validation probabilities.

For every data regime (``nominal``: the generator's defaults; ``crowded``: near-touching sheets and holes,
``synth --regime crowded``) and every seed ``s``:

* a training dataset drawn with data seed ``s`` (``--cases`` cases; fold 0 of a ``--folds`` split is the
  validation set) goes through the real ``nnunetv2_topo synth`` -> ``nnUNetv2_convert_vesuvius`` ->
  ``nnUNetv2_plan_and_preprocess`` and reduced plans (8/16/32 features, patch 32³, batch 2);
* every variant trains on it with training seed ``s`` (the ``seed`` key: the same initial weights and the same
  patches for every variant of that seed) through nnU-Net's own ``run_training`` on one CPU thread, exporting its
  validation probabilities (``--npz``);
* ``nnunetv2_topo tune`` chooses the model's post-processing on those validation probabilities;
* the model predicts a fixed held-out test set of the regime (``--test-cases``, drawn with seed 1000, the same for
  every model: paired), which is scored with the exact competition metric at argmax (p > 0.5) and with the tuned
  post-processing; the calibration is the mean probability on surface (label 1) and background (label 0) voxels.

The TopoWarmup schedule keys are scaled to the budget (``warmup_epochs`` and ``plateau_patience`` = epochs / 10),
the same for every TopoWarmup variant; nnUNetTrainer keeps its poly schedule over the same epochs.

Every model's result is a JSON file in ``WORK/results``; a rerun skips the models that have one, so the matrix can
be run in parts (``--seeds``, ``--regimes``, ``--variants``) and the table printed at any point with ``--report``::

    python benchmarks/variants.py --quick                         # smoke run: 2 variants, 1 seed, tiny budget
    python benchmarks/variants.py --jobs 2                        # the matrix: 6 variants x 5 seeds x 2 regimes
    python benchmarks/variants.py --variants FiveTerm~alpha0.5 FiveTerm~ce   # fixes, one change each
    python benchmarks/variants.py --report                        # table, paired differences, plot
    # on a GPU at real size (nnU-Net's plans, 128³ cases, 100 epochs x 250 iterations):
    python benchmarks/variants.py --device cuda --jobs 1 --plans nnUNetPlans --shape 128 128 128 --cases 30 \
        --epochs 100 --iterations 250 --val-iterations 50 --work benchmarks/out/variants_gpu

Variants named ``BASE~CHANGE`` are candidate fixes: ``BASE`` with one configuration change (see ``FIXES``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import run_logged  # noqa: E402  (the benchmarks folder is no package)

BIN = Path(sys.executable).parent
PLANS = "nnUNetPlans_tiny"
REGIMES = ("nominal", "crowded")
REFERENCE = "nnUNetTrainer"
DEFAULT_LABEL = "Muon"
"""The row of the default trainer's settings (``nnUNetTrainerTopoWarmup``: Muon since this benchmark measured it ahead
of SGD): every other variant is also paired against it."""
SGD_LABEL = "TopoWarmup"
"""The row of the default loss with SGD (the default trainer until Muon), which the SGD rows are also paired with."""
TEST_SEED = 1000

FIVE_TERMS = {"dice": 0.3, "focal": 0.4, "boundary": 0.15, "cldice": 0.10, "dilated_mse": 0.05}

SGD = {"optimizer": "sgd"}
"""Pinned on every row measured while SGD was the default optimizer, so a rerun measures what the stored results did."""

VARIANTS: dict[str, tuple[str, dict]] = {
    "nnUNetTrainer": ("nnUNetTrainer_TopoBudget", {}),
    "FiveTerm": ("nnUNetTrainerTopoWarmup_FiveTerm", SGD),
    "DiceFocal": ("nnUNetTrainerTopoWarmup_DiceFocal", SGD),
    "SkelRecall": ("nnUNetTrainerTopoWarmup_SkelRecall", SGD),
    "clDice": ("nnUNetTrainerTopoWarmup_clDice", SGD),
    "AdamW": ("nnUNetTrainerTopoWarmup_AdamW", {"loss_weights": FIVE_TERMS}),
    "TopoWarmup": ("nnUNetTrainerTopoWarmup_SGD", {}),
    "Phased": ("nnUNetTrainerTopoWarmup_Phased", SGD),
    "BettiMatching": ("nnUNetTrainerTopoWarmup_BettiMatching", SGD),
    "Muon": ("nnUNetTrainerTopoWarmup_Muon", {}),
}
"""Label -> (trainer class, configuration keys on top of the budget). ``FiveTerm`` was ``nnUNetTrainerTopoWarmup``'s
default when the matrix was measured (results labelled ``TopoWarmup`` then); the default loss is now the ``clDice``
row's (CE 1 + Dice 1 + clDice 0.5). ``AdamW`` pins the five-term loss it was measured with. ``TopoWarmup`` is the
default loss with SGD (``nnUNetTrainerTopoWarmup_SGD``): the default trainer when issue 27 measured it, whose results
carry this label; ``Muon`` is the default trainer's settings now. The ``loss_schedule`` of ``Phased`` and
``BettiMatching`` (written for 1,000 epochs) is scaled to the budget (:func:`scaled_schedule`)."""
DEFAULT_ROWS = ("nnUNetTrainer", "TopoWarmup", "Phased", "BettiMatching", "Muon")
"""The rows run by default (issue 27); the older rows (``FiveTerm`` … ``AdamW``) by ``--variants``."""


def scaled_schedule(trainer: str, epochs: int, reference_epochs: int = 1000) -> dict:
    """The trainer class's ``loss_schedule`` with start and ramp scaled by ``epochs / reference_epochs`` (ramp at
    least 1), so a phase keeps its place in a shorter run; ``{}`` without a schedule."""
    from nnunetv2_topo.trainers import variants

    cls = getattr(variants, trainer, None)
    schedule = (cls.merged_topo_defaults() if cls is not None else {}).get("loss_schedule") or {}
    f = epochs / reference_epochs
    return {"loss_schedule": {t: {"start": round(s["start"] * f), "ramp": max(1, round(s.get("ramp", 1) * f))}
                              for t, s in schedule.items()}} if schedule else {}  # fmt: skip


FIVE_TERMS_CE = {"dice": 0.3, "ce": 0.4, "boundary": 0.15, "cldice": 0.10, "dilated_mse": 0.05}
FIXES: dict[str, tuple[str, dict]] = {
    "FiveTerm~alpha0.5": ("nnUNetTrainerTopoWarmup", {**SGD, "loss_weights": FIVE_TERMS, "focal_alpha": 0.5}),
    "FiveTerm~ce": ("nnUNetTrainerTopoWarmup", {**SGD, "loss_weights": FIVE_TERMS_CE}),
    "FiveTerm~cedice": ("nnUNetTrainerTopoWarmup", {**SGD, "loss_weights": {"ce": 1.0, "dice": 1.0}}),
    "FiveTerm~clip12": ("nnUNetTrainerTopoWarmup", {**SGD, "loss_weights": FIVE_TERMS, "grad_clip_norm": 12.0}),
    "FiveTerm~nowarmup": ("nnUNetTrainerTopoWarmup", {**SGD, "loss_weights": FIVE_TERMS, "warmup_epochs": 0}),
}
"""Candidate fixes for a losing variant, one change each (the likely causes: focal alpha on a minority class, the
loss weights, clipping, the warmup)."""
SCHEDULES: dict[str, tuple[str, dict]] = {
    "TopoWarmup~noanneal": ("nnUNetTrainerTopoWarmup_SGD", {"plateau_final_anneal": 0.0}),
    "TopoWarmup~seedplateau": ("nnUNetTrainerTopoWarmup_SGD", {
        "plateau_metric": "val_loss", "plateau_patience": 8, "plateau_threshold": 1e-4,
        "plateau_threshold_mode": "rel", "plateau_cooldown": 0, "plateau_min_lr": 1e-6, "plateau_final_anneal": 0.0}),
}  # fmt: skip
"""The SGD TopoWarmup (its own schedule defaults, no budget scaling; the default when measured) and its schedule
without the final anneal / with the original recipe's plateau, for ``--demo-budget``."""
DEMO_BUDGET = {"cases": 10, "folds": 3, "test_cases": 6, "shape": [64, 64, 64], "epochs": 25, "iterations": 25,
               "val_iterations": 4, "warmup_epochs": 5, "features": [4, 8, 16]}  # fmt: skip
"""``nnunetv2_topo demo``'s budget (DemoOptions, its reduced plans) with 6 held-out test cases."""

CPU_LAUNCHER = (
    "import sys, torch; torch.set_num_threads(1); "
    "from nnunetv2.run.run_training import run_training; "
    "run_training(sys.argv[1], '3d_fullres', 0, sys.argv[2], sys.argv[3], export_validation_probabilities=True, "
    "device=torch.device('cpu')); import resource; u = resource.getrusage(resource.RUSAGE_SELF); "
    "print(f'RUSAGE cpu_s={u.ru_utime + u.ru_stime:.1f} maxrss_mb={u.ru_maxrss / 1024:.0f}')"
)
"""nnU-Net's training on one CPU thread; the last line reports the process's CPU seconds and peak memory."""


def _rusage(log: Path) -> dict:
    """CPU seconds and peak resident memory (MB) of a training run, from the launcher's ``RUSAGE`` line."""
    for line in reversed(log.read_text(errors="replace").splitlines()) if log.is_file() else []:
        if line.startswith("RUSAGE "):
            return {k: float(v) for k, v in (item.split("=") for item in line.split()[1:])}
    return {}


# ----------------------------------------------------------------------------------------------------------- data
def dataset_id(regime: str, seed: int) -> int:
    return 100 * (REGIMES.index(regime) + 1) + seed


def _env(work: Path) -> dict:
    from nnunetv2_topo.nnunet_env import nnunet_env

    env = nnunet_env(work, data_workers=0, processes=1)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def _synth_cmd(out: Path, cases: int, shape: list, seed: int, regime: str) -> list:
    return [BIN / "nnunetv2_topo", "synth", "--output", out, "--cases", cases, "--shape", *shape, "--test-cases", 0,
            "--seed", seed, "--regime", regime, "--quiet"]  # fmt: skip


def prepare_dataset(work: str, regime: str, seed: int, cases: int, shape: list, folds: int,
                    features: tuple = (8, 16, 32)) -> str:  # fmt: skip
    """synth -> convert -> plan/preprocess -> reduced plans for one (regime, data seed); returns the dataset name."""
    from nnunetv2_topo.reduced_plans import make_reduced_plans

    work_p = Path(work)
    env = _env(work_p)
    did = dataset_id(regime, seed)
    name = f"Dataset{did:03d}_{regime}{seed}"
    pre = work_p / "nnUNet_preprocessed" / name
    if (pre / f"{PLANS}.json").exists():
        return name
    logs = work_p / "logs"
    kaggle = work_p / "kaggle" / f"{regime}_s{seed}"
    if not kaggle.exists():
        run_logged(_synth_cmd(kaggle, cases, shape, seed, regime), env, logs / f"synth_{name}.log")
    run_logged([BIN / "nnUNetv2_convert_vesuvius", "--input", kaggle, "--dataset-id", did, "--name", f"{regime}{seed}",
          "--folds", folds, "--overwrite", "--quiet"], env, logs / f"convert_{name}.log")  # fmt: skip
    plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
    run_logged([BIN / "nnUNetv2_plan_and_preprocess", "-d", did, "-c", "3d_fullres", "-np", "1"], plan_env,
         logs / f"plan_{name}.log")  # fmt: skip
    make_reduced_plans(pre, name=PLANS, features=tuple(features), patch=(32, 32, 32), batch=2)
    return name


def prepare_test_set(work: Path, regime: str, cases: int, shape: list) -> Path:
    """The regime's held-out cases (images and labels), the same for every model."""
    out = work / "kaggle" / f"{regime}_test"
    if not out.exists():
        run_logged(_synth_cmd(out, cases, shape, TEST_SEED, regime), _env(work), work / "logs" / f"synth_{regime}.log")
    return out


# ------------------------------------------------------------------------------------------------- one model
def _scores(prob, gt, config) -> dict:
    import numpy as np

    from nnunetv2_topo.evaluation.case_scoring import score_prediction
    from nnunetv2_topo.postprocessing.steps import postprocess_volume

    out = {}
    for kind, mask in (("argmax", (prob > 0.5).astype(np.uint8)), ("tuned", postprocess_volume(prob, config))):
        s = score_prediction(mask, gt)
        out[kind] = {k: s[k] for k in ("score", "topo", "surface_dice", "voi_score")}
    return out


def run_model(task: dict) -> dict:
    """Train one variant on one (regime, seed), tune it, score it on the test set; writes and returns its JSON."""
    import numpy as np
    import tifffile

    work, label, trainer, config = Path(task["work"]), task["label"], task["trainer"], task["config"]
    regime, seed, dataset = task["regime"], task["seed"], task["dataset"]
    tag = f"{label}@{regime}{seed}"
    env = _env(work)
    env["nnUNet_results"] = str(work / "nnUNet_results" / label)
    cfg = work / "configs" / f"{tag}.json"
    cfg.write_text(json.dumps(config))  # JSON is valid YAML
    env["nnUNet_topo_config"] = str(cfg)
    plans, device = task.get("plans", PLANS), task.get("device", "cpu")
    model = Path(env["nnUNet_results"]) / dataset / f"{trainer}__{plans}__3d_fullres"
    fold = model / "fold_0"
    logs = work / "logs"
    reuse = task.get("reuse_trained") and (fold / "checkpoint_final.pth").is_file()
    if fold.exists() and not reuse:
        shutil.rmtree(fold)
    if device == "cpu":
        cmd = [sys.executable, "-c", CPU_LAUNCHER, dataset, trainer, plans]
    else:  # nnU-Net's own command on the GPU (data augmentation workers as nnU-Net sets them)
        cmd = [BIN / "nnUNetv2_train", dataset, "3d_fullres", "0", "-tr", trainer, "-p", plans, "-device", device,
               "--npz"]  # fmt: skip
        env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
    train_s = math.nan if reuse else run_logged(cmd, env, logs / f"train_{tag}.log")

    t0 = time.time()
    gt_dir = work / "nnUNet_preprocessed" / dataset / "gt_segmentations"
    tuned = work / "tuned" / f"{tag}.json"
    if tuned.exists():
        tuned.unlink()
    tune_cmd = [BIN / "nnunetv2_topo", "tune", "--input", fold / "validation", "--gt", gt_dir, "--output", tuned]
    run_logged([*tune_cmd, "-np", "0", "--quiet", "--overwrite"], env, logs / f"tune_{tag}.log")
    tune_s = time.time() - t0

    import torch

    from nnunetv2_topo.inference.models import check_model_folder, use_topo_trainers
    from nnunetv2_topo.inference.predict import fused_probability, load_models
    from nnunetv2_topo.postprocessing.config_file import load_postprocess_file

    torch.set_num_threads(1)
    os.environ.update({k: env[k] for k in ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw")})
    use_topo_trainers()
    config_pp = load_postprocess_file(tuned).steps
    models = load_models([check_model_folder(model, ["0"], "checkpoint_final.pth")], [1.0], torch.device(device),
                         progress=False)  # fmt: skip
    t0 = time.time()
    test = Path(task["test_dir"])
    cases = []
    for image_path in sorted((test / "train_images").glob("*.tif")):
        image = tifffile.imread(image_path)
        gt = tifffile.imread(test / "train_labels" / image_path.name)
        prob = fused_probability(models, image, (1.0, 1.0, 1.0), tta="none", mode="logit")
        case = _scores(prob, gt, config_pp)
        case["p_surface"] = float(prob[gt == 1].mean())
        case["p_background"] = float(prob[gt == 0].mean())
        case["id"] = image_path.stem
        cases.append(case)
    log = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    result = {
        "label": label,
        "trainer": trainer,
        "config": config,
        "regime": regime,
        "seed": seed,
        "dataset": dataset,
        "seconds": {"train": train_s, "tune": tune_s, "test": time.time() - t0},
        "train_usage": {} if reuse else _rusage(logs / f"train_{tag}.log"),
        "iterations": int(config.get("num_epochs", 0)) * int(config.get("num_iterations_per_epoch", 0)),
        "tuned_steps": json.loads(tuned.read_text())["steps"],
        "train_losses": [float(v) for v in log["train_losses"]],
        "ema_fg_dice": [float(v) for v in log["ema_fg_dice"]],
        "lrs": [float(v) for v in log["lrs"]],
        "cases": cases,
    }
    for kind in ("argmax", "tuned"):
        result[kind] = {k: float(np.mean([c[kind][k] for c in cases])) for k in cases[0][kind]}
    for k in ("p_surface", "p_background"):
        result[k] = float(np.mean([c[k] for c in cases]))
    out = work / "results" / f"{tag}.json"
    out.write_text(json.dumps(result, indent=1))
    shutil.rmtree(fold / "validation", ignore_errors=True)  # the .npz are large; the score is kept
    return result


# ------------------------------------------------------------------------------------------------------ report
COMPONENTS = ("score", "topo", "surface_dice", "voi_score")


def _mean_sd(values: list[float]) -> str:
    n = len(values)
    if not n:
        return "–"
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return f"{mean:.3f} ± {sd:.3f}"


def _ci95(values: list[float]) -> str:
    """Student-t 95 % confidence interval of the mean (the paired differences' noise over the seeds)."""
    n = len(values)
    if n < 2:
        return "–"
    from scipy import stats

    mean = sum(values) / n
    half = stats.t.ppf(0.975, n - 1) * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return f"[{mean - half:+.3f}, {mean + half:+.3f}]"


def _usage(rows: list[dict]) -> str:
    """Mean training CPU time per iteration (validation and start-up included) and mean peak memory."""
    used = [r for r in rows if (r.get("train_usage") or {}).get("cpu_s") and r.get("iterations")]
    if not used:
        return "– | –"
    cpu = sum(1000 * r["train_usage"]["cpu_s"] / r["iterations"] for r in used) / len(used)
    mem = sum(r["train_usage"]["maxrss_mb"] for r in used) / len(used)
    return f"{cpu:.0f} | {mem:.0f}"


def load_results(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))]


def report(work: Path) -> str:
    results = load_results(work)
    if not results:
        return f"no results in {work / 'results'}"
    by = {(r["label"], r["regime"], r["seed"]): r for r in results}
    order = {label: i for i, label in enumerate(DEFAULT_ROWS)}
    labels = sorted({r["label"] for r in results}, key=lambda s: (order.get(s, 99), s not in VARIANTS, s))
    lines = []
    for regime in REGIMES:
        rows = [r for r in results if r["regime"] == regime]
        if not rows:
            continue
        lines.append(f"\n### {regime} regime\n")
        lines.append("| variant | seeds | argmax score | tuned score | tuned − nnUNetTrainer (paired) | 95 % CI | wins "
                     "| Δ topo | Δ SurfaceDice | Δ VOI | p surface | p background | train s | CPU ms/iter "
                     "| peak MB |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label in labels:
            mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["seed"])
            if not mine:
                continue
            paired = [(r, by.get((REFERENCE, regime, r["seed"]))) for r in mine]
            paired = [(r, ref) for r, ref in paired if ref is not None]

            def diffs(kind: str, key: str, pairs=paired) -> list[float]:
                return [r[kind][key] - ref[kind][key] for r, ref in pairs]

            d = diffs("tuned", "score")
            wins = f"{sum(x > 0 for x in d)}/{len(d)}" if label != REFERENCE else "–"
            lines.append(
                f"| {label} | {len(mine)} | {_mean_sd([r['argmax']['score'] for r in mine])} | "
                f"{_mean_sd([r['tuned']['score'] for r in mine])} | "
                + (f"{_mean_sd(d)} | {_ci95(d)} | {wins} | " if label != REFERENCE else "– | – | – | ")
                + " | ".join(_mean_sd(diffs("tuned", k)) if label != REFERENCE else "–"
                             for k in ("topo", "surface_dice", "voi_score"))
                + f" | {_mean_sd([r['p_surface'] for r in mine])} | {_mean_sd([r['p_background'] for r in mine])} | "
                f"{sum(r['seconds']['train'] for r in mine) / len(mine):.0f} | {_usage(mine)} |"
            )  # fmt: skip
        arg = [(r, by.get((REFERENCE, regime, r["seed"]))) for r in rows if r["label"] != REFERENCE]
        arg = [(r, ref) for r, ref in arg if ref is not None]
        if arg:
            diff = {label: [r["argmax"]["score"] - ref["argmax"]["score"] for r, ref in arg if r["label"] == label]
                    for label in labels if label != REFERENCE}  # fmt: skip
            lines.append("\nPaired argmax differences (variant − nnUNetTrainer, same seed): "
                         + "; ".join(f"{label} {_mean_sd(d)}" for label, d in diff.items() if d))  # fmt: skip
        lines.extend(_paired_with(by, regime, labels, DEFAULT_LABEL, "the default trainer"))
        lines.extend(_paired_with(by, regime, labels, SGD_LABEL, "the SGD default the older rows were measured beside"))
    return "\n".join(lines)


def _paired_with(by: dict, regime: str, labels: list[str], base: str, title: str) -> list[str]:
    """Paired differences of every other variant against the row ``base``, tuned and at argmax, with their 95 %
    intervals and wins."""
    lines = []
    for label in labels:
        if label in (REFERENCE, base):
            continue
        seeds = sorted(s for (lab, reg, s) in by if lab == label and reg == regime and (base, reg, s) in by)
        pairs = [(by[(label, regime, s)], by[(base, regime, s)]) for s in seeds]
        if not pairs:
            continue
        parts = []
        for kind in ("tuned", "argmax"):
            d = [r[kind]["score"] - ref[kind]["score"] for r, ref in pairs]
            parts.append(f"{kind} {_mean_sd(d)} {_ci95(d)} ({sum(x > 0 for x in d)}/{len(d)} wins)")
        lines.append(f"{label} − {base} (paired, {len(pairs)} seeds): " + "; ".join(parts))
    return [f"\nPaired against {title} ({regime} regime):", *lines] if lines else []


def plot(work: Path) -> Path | None:
    """``variants.png``: per regime, every variant's paired score difference to nnUNetTrainer (one dot per seed,
    argmax grey, tuned blue, a bar at the mean)."""
    results = load_results(work)
    regimes = [g for g in REGIMES if any(r["regime"] == g for r in results)]
    labels = sorted({r["label"] for r in results} - {REFERENCE}, key=lambda s: (s not in VARIANTS, s))
    if not regimes or not labels:
        return None
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(regimes), figsize=(6.5 * len(regimes), 4.8), constrained_layout=True,
                             squeeze=False)  # fmt: skip
    for ax, regime in zip(axes[0], regimes, strict=True):
        ref = {r["seed"]: r for r in results if r["regime"] == regime and r["label"] == REFERENCE}
        for i, label in enumerate(labels):
            for j, (kind, color) in enumerate((("argmax", "tab:gray"), ("tuned", "tab:blue"))):
                d = [r[kind]["score"] - ref[r["seed"]][kind]["score"] for r in results
                     if r["regime"] == regime and r["label"] == label and r["seed"] in ref]  # fmt: skip
                x = i + 0.18 * (2 * j - 1)
                ax.scatter([x] * len(d), d, s=16, color=color, alpha=0.7, label=kind if i == 0 else None)
                if d:
                    ax.hlines(sum(d) / len(d), x - 0.12, x + 0.12, color=color, lw=2.5)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.set(title=f"{regime}: score − nnUNetTrainer (same seed, same test cases)", ylabel="paired difference")
        ax.legend(fontsize=8)
    png = work / "variants.png"
    fig.savefig(png, dpi=90)
    return png


# -------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="benchmarks/out/variants", help="work folder (reused; finished models are "
                        "skipped)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_ROWS), help=f"labels from "
                        f"{', '.join(VARIANTS)} or fixes {', '.join(FIXES)} (default: "
                        f"{', '.join(DEFAULT_ROWS)})")  # fmt: skip
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--cases", type=int, default=12, help="training + validation cases per dataset")
    parser.add_argument("--folds", type=int, default=3, help="split folds (fold 0 validates: cases / folds)")
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (one CPU thread each; 1 on a GPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: nnUNetv2_train -device cuda")
    parser.add_argument("--plans", default=PLANS, help=f"plans identifier ({PLANS} = reduced for the CPU; "
                        "nnUNetPlans = nnU-Net's own, for a GPU run at real size)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: clDice and nnUNetTrainer, seed 0, "
                        "nominal, 6 cases of 40³, 6 epochs x 5 iterations")  # fmt: skip
    parser.add_argument("--demo-budget", action="store_true", help="the demo's budget: 10 cases of 64³ (3 folds), "
                        "its reduced plans (4/8/16 features), 25 epochs x 25 iterations, warmup 5, 6 test cases; "
                        "TopoWarmup with its own schedule defaults (no budget scaling) against nnUNetTrainer, seeds "
                        "0-2 unless --seeds/--variants say otherwise")  # fmt: skip
    parser.add_argument("--reuse-trained", action="store_true", help="a model whose fold already holds "
                        "checkpoint_final.pth is not trained again (only tuned and tested; train s = nan)")  # fmt: skip
    parser.add_argument("--report", action="store_true", help="only print the table of the results so far")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    features = (8, 16, 32)
    schedule_scaled = True
    if args.demo_budget:
        d = DEMO_BUDGET
        if args.variants == list(DEFAULT_ROWS):
            args.variants = ["nnUNetTrainer", "TopoWarmup", "TopoWarmup~noanneal"]
        if args.seeds == [0, 1, 2, 3, 4]:
            args.seeds = [0, 1, 2]
        args.regimes = ["nominal"] if args.regimes == list(REGIMES) else args.regimes
        args.cases, args.folds, args.test_cases, args.shape = d["cases"], d["folds"], d["test_cases"], d["shape"]
        args.epochs, args.iterations, args.val_iterations = d["epochs"], d["iterations"], d["val_iterations"]
        features, schedule_scaled = tuple(d["features"]), False
        if args.work == parser.get_default("work"):
            work = work.with_name(work.name + "_demo_budget")
    if args.report:
        print(report(work))
        png = plot(work)
        print(f"plot: {png}")
        return 0
    if args.quick:
        args.variants, args.seeds, args.regimes = ["nnUNetTrainer", "clDice"], [0], ["nominal"]
        args.cases, args.folds, args.test_cases, args.shape = 6, 3, 2, [40, 40, 40]
        args.epochs, args.iterations, args.val_iterations = 6, 5, 1
        work = work.with_name(work.name + "_quick")
    known = {**VARIANTS, **FIXES, **SCHEDULES}
    unknown = [v for v in args.variants if v not in known]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}; choose from {', '.join(known)}")

    from nnunetv2_topo.nnunet_env import NNUNET_FOLDERS

    for sub in (*NNUNET_FOLDERS, "logs", "configs", "tuned", "results"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    budget = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
              "num_val_iterations_per_epoch": args.val_iterations}  # fmt: skip
    schedule = {"warmup_epochs": max(1, args.epochs // 10), "plateau_patience": max(1, args.epochs // 10)}
    if not schedule_scaled:  # the demo's configuration: only the warmup is set, the rest are the trainer's defaults
        schedule = {"warmup_epochs": DEMO_BUDGET["warmup_epochs"]}
    t_start = time.time()
    ctx = get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        data = {(r, s): pool.submit(prepare_dataset, str(work), r, s, args.cases, args.shape, args.folds, features)
                for s in args.seeds for r in args.regimes}  # fmt: skip
        tests = {r: prepare_test_set(work, r, args.test_cases, args.shape) for r in args.regimes}
        names = {k: f.result() for k, f in data.items()}
        print(f"datasets ready in {time.time() - t_start:.0f} s", flush=True)
        futures = {}
        for seed in args.seeds:  # seed-major: a partial run has every variant for the seeds it finished
            for regime in args.regimes:
                for label in args.variants:
                    if (work / "results" / f"{label}@{regime}{seed}.json").exists():
                        continue
                    trainer, extra = known[label]
                    topo = trainer != VARIANTS[REFERENCE][0]
                    scaled = scaled_schedule(trainer, args.epochs) if topo and schedule_scaled else {}
                    config = {**budget, **(schedule if topo else {}), **scaled, **extra, "seed": seed}
                    task = {"work": str(work), "label": label, "trainer": trainer, "config": config,
                            "regime": regime, "seed": seed, "dataset": names[(regime, seed)],
                            "test_dir": str(tests[regime]), "plans": args.plans, "device": args.device,
                            "reuse_trained": args.reuse_trained}  # fmt: skip
                    futures[pool.submit(run_model, task)] = f"{label}@{regime}{seed}"
        for done, fut in enumerate(as_completed(futures), 1):
            tag = futures[fut]
            try:
                r = fut.result()
            except Exception as exc:  # keep the rest of the matrix running; the log names the cause
                print(f"[{done}/{len(futures)}] {tag} FAILED: {exc}", flush=True)
                continue
            print(f"[{done}/{len(futures)}] {tag}: argmax {r['argmax']['score']:.4f} tuned {r['tuned']['score']:.4f} "
                  f"(train {r['seconds']['train']:.0f} s, tune {r['seconds']['tune']:.0f} s, test "
                  f"{r['seconds']['test']:.0f} s; {(time.time() - t_start) / 60:.1f} min)", flush=True)  # fmt: skip
    print(report(work))
    print(f"plot: {plot(work)}; wall {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
