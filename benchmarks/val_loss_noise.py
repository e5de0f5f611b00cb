"""Epoch-to-epoch noise of nnU-Net's validation loss under the old and the new batch reduction of the per-sample
loss terms, side by side on the same simulated validation patches.

nnU-Net's per-epoch validation loss (what ``plateau_metric: val_loss`` / ``val_loss_ema`` watch) is the mean over
``num_val_iterations_per_epoch`` (50) batches of random validation patches, a third of the samples centred on
foreground (``oversample_foreground_percent`` 0.33: with batch 2, the second sample of every batch). With a fixed
model, everything that moves that number from epoch to epoch is patch sampling noise. Here:

1. synthetic cases (``nnunetv2_topo.synth``: ignore is the majority, as in the Vesuvius labels) and a fixed
   simulated prediction per case (``simulate_probability``, the project's model of a trained network's
   probability map with its failure modes);
2. a pool of random and foreground-centred patches; for each patch the loss terms' per-sample values, computed
   by the real terms at full resolution (``LossTerm.per_sample``; Dice/CE as nnU-Net reduces them);
3. many simulated epochs of 50 batches drawn from the pool; each batch's loss under the old reduction (batch
   mean over every sample, an all-ignore sample counting 0) and the new one (mean over the samples a term is
   defined for); the sd over epochs of the per-epoch loss is the noise the plateau sees.

    python benchmarks/val_loss_noise.py            # 2-core CPU: a few minutes
    python benchmarks/val_loss_noise.py --quick    # smaller pool, fewer epochs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses import TERMS, TopologyLoss
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.synth.generator import synthesize_case
from nnunetv2_topo.testing.probability_maps import simulate_probability
from nnunetv2_topo.trainers.config import DEFAULT_LOSS_WEIGHTS, FIVE_TERM_LOSS_WEIGHTS
from nnunetv2_topo.transforms import compute_batch_target

LOSSES = {"default (ce 1, dice 1, cldice 0.5)": DEFAULT_LOSS_WEIGHTS, "five-term": FIVE_TERM_LOSS_WEIGHTS}
BATCH_TERMS = ("dice", "ce")  # nnU-Net's reductions, the same before and after


def _cases(n: int, size: int, box: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (label, foreground probability) pairs. ``box`` < 1: only a random axis-aligned box holding that share
    of the volume is annotated, the rest is ignore (as Vesuvius chunks annotated in part)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        case = synthesize_case((size,) * 3, rng)
        label = case.label.copy()
        if box < 1.0:
            edge = [max(1, round(size * box ** (1 / 3)))] * 3
            lo = [int(rng.integers(0, size - e + 1)) for e in edge]
            keep = np.zeros(label.shape, bool)
            keep[tuple(slice(a, a + e) for a, e in zip(lo, edge))] = True
            label[~keep] = IGNORE_LABEL
            if not (label == 1).any():  # nnU-Net would have no foreground to centre on: keep one sheet voxel
                label[tuple(np.argwhere(case.label == 1)[0])] = 1
        out.append((label, simulate_probability(case.sheets, case.sheet_axis, rng)))
    return out


def _patch_origin(label: np.ndarray, patch: int, rng: np.random.Generator, foreground: bool) -> tuple[int, ...]:
    hi = [s - patch for s in label.shape]
    if not foreground:
        return tuple(int(rng.integers(0, h + 1)) for h in hi)
    fg = np.argwhere(label == 1)
    centre = fg[rng.integers(len(fg))]
    return tuple(int(np.clip(c - patch // 2, 0, h)) for c, h in zip(centre, hi))


def patch_pool(cases, patch: int, per_kind: int, terms: list[str], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``{"random"|"foreground": {term: per-sample values, term+"_counted": bool, "ce_sum", "valid"}}``."""
    rng = np.random.default_rng(seed)
    loss = TopologyLoss(dict.fromkeys(terms, 1.0), ignore_label=IGNORE_LABEL)
    pool: dict[str, dict[str, list]] = {}
    for kind in ("random", "foreground"):
        rows: dict[str, list] = {k: [] for k in [*terms, *(f"{t}_counted" for t in terms), "ce_sum", "valid"]}
        for _ in range(per_kind):
            label, prob = cases[int(rng.integers(len(cases)))]
            o = _patch_origin(label, patch, rng, kind == "foreground")
            sl = tuple(slice(a, a + patch) for a in o)
            lab = torch.from_numpy(label[sl].astype(np.int16))[None, None]
            p = np.clip(prob[sl].astype(np.float64), 1e-4, 1 - 1e-4)
            logit = torch.from_numpy(np.log(p) - np.log1p(-p))[None, None]
            logits = torch.cat([torch.zeros_like(logit), logit], dim=1)
            parts = FgParts(logits, lab, IGNORE_LABEL)
            rows["valid"].append(float(parts.valid_count.sum()))
            for name in terms:
                term = loss.terms[name]
                if name == "ce":
                    value = float(term.compute(parts)) * max(rows["valid"][-1], 1.0)
                    rows["ce_sum"].append(value)
                    rows[name].append(value)
                    rows["ce_counted"].append(True)
                elif name == "dice":
                    rows[name].append(float(term.compute(parts)))
                    rows["dice_counted"].append(True)
                else:
                    spec = TERMS[name]
                    maps = {}
                    if spec.target is not None:
                        maps[spec.target] = compute_batch_target(lab, spec.target, IGNORE_LABEL, **loss.target_params)
                    values, counted = term.per_sample(parts, **maps)
                    rows[name].append(float(values[0]))
                    rows[f"{name}_counted"].append(bool(counted[0]))
        pool[kind] = {k: np.asarray(v) for k, v in rows.items()}
    return pool


def epoch_losses(pool, weights: dict[str, float], epochs: int, batches: int, seed: int) -> dict[str, np.ndarray]:
    """Per-epoch validation loss (mean over ``batches`` batches of [random patch, foreground patch]) under the
    old and the new reduction; the same draws for both."""
    rng = np.random.default_rng(seed)
    rand, fore = pool["random"], pool["foreground"]
    out = {"old": np.empty(epochs), "new": np.empty(epochs)}
    for e in range(epochs):
        i = rng.integers(len(rand["valid"]), size=batches)
        j = rng.integers(len(fore["valid"]), size=batches)
        old = np.zeros(batches)
        new = np.zeros(batches)
        for name, w in weights.items():
            a, b = rand[name][i], fore[name][j]
            if name == "ce":
                value = (a + b) / np.maximum(rand["valid"][i] + fore["valid"][j], 1.0)
                old += w * value
                new += w * value
            elif name == "dice":
                old += w * (a + b) / 2
                new += w * (a + b) / 2
            else:
                ca, cb = rand[f"{name}_counted"][i], fore[f"{name}_counted"][j]
                old += w * (a + b) / 2  # an uncounted sample's value is 0: the old batch mean
                new += w * (a * ca + b * cb) / np.maximum(ca.astype(int) + cb, 1)
        out["old"][e], out["new"][e] = old.mean(), new.mean()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="case edge (voxels)")
    parser.add_argument("--patch", type=int, default=48, help="cubic patch edge (voxels)")
    parser.add_argument("--pool", type=int, default=300, help="patches per kind (random, foreground)")
    parser.add_argument("--epochs", type=int, default=400, help="simulated epochs")
    parser.add_argument("--batches", type=int, default=50, help="validation batches per epoch (nnU-Net: 50)")
    parser.add_argument(
        "--annotated-box", type=float, nargs="+", default=[1.0, 0.25, 0.1],
        help="scenarios: share of each case's volume that is annotated (a random box; 1 = the synthetic labels as "
        "generated)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="pool 60, 100 epochs, 3 cases of 96³")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pool, args.epochs, args.cases, args.size = 60, 100, 3, 96
    torch.set_num_threads(1)
    terms = sorted({t for w in LOSSES.values() for t in w}, key=list(TERMS).index)
    results = []
    for annotated in args.annotated_box:
        t0 = time.perf_counter()
        cases = _cases(args.cases, args.size, annotated, args.seed)
        ignore = float(np.mean([np.mean(lab == IGNORE_LABEL) for lab, _ in cases]))
        pool = patch_pool(cases, args.patch, args.pool, terms, args.seed)
        all_ignore = float(np.mean(pool["random"]["valid"] == 0))
        print(
            f"\nannotated box {annotated:.0%} of each case: {ignore:.0%} of the voxels ignore; {all_ignore:.0%} of "
            f"the random patches ({args.patch}³) entirely ignore (foreground-centred: never); pool built in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        print(f"{'loss':38s} {'sd old':>9s} {'sd new':>9s} {'new/old':>8s} {'mean old':>9s} {'mean new':>9s}")
        for label, weights in LOSSES.items():
            ep = epoch_losses(pool, weights, args.epochs, args.batches, args.seed + 1)
            row = {
                "annotated": annotated, "ignore_fraction": ignore, "all_ignore_random_patches": all_ignore,
                "loss": label, "sd_old": float(np.std(ep["old"], ddof=1)), "sd_new": float(np.std(ep["new"], ddof=1)),
                "mean_old": float(ep["old"].mean()), "mean_new": float(ep["new"].mean()),
            }  # fmt: skip
            results.append(row)
            print(
                f"{label:38s} {row['sd_old']:9.5f} {row['sd_new']:9.5f} {row['sd_new'] / row['sd_old']:8.3f} "
                f"{row['mean_old']:9.4f} {row['mean_new']:9.4f}"
            )
        per_term = {}
        for name in terms:
            if name in BATCH_TERMS:
                continue
            ep = epoch_losses(pool, {name: 1.0}, args.epochs, args.batches, args.seed + 1)
            per_term[name] = (statistics.stdev(ep["old"]), statistics.stdev(ep["new"]))
        listed = ", ".join(f"{k} {a:.5f} -> {b:.5f}" for k, (a, b) in per_term.items())
        print(f"per term (weight 1), sd old -> new: {listed}")
        results.append({"annotated": annotated, "per_term_sd": per_term})
    print(
        f"\n{args.cases} cases of {args.size}³, pool {args.pool} random + {args.pool} foreground patches, "
        f"{args.epochs} epochs × {args.batches} batches of 2; sd = standard deviation over epochs"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
