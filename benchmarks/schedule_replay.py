"""Plateau settings x simulated 1,000-epoch nnU-Net logs: the table the default LR schedule was chosen from.

Every setting is replayed with the trainer's real scheduler (``nnunetv2_topo.scheduling.replay``, the code
``nnunetv2_topo schedule`` runs) on the simulated families of ``nnunetv2_topo.testing.simulated_logs``, 10 seeds
each. Columns:

* ``improving``: % of epochs at >= 10 % of the base LR on the still-improving families (target >= 60 %; nnU-Net's
  poly schedule: 92 %), mean over families and seeds, and the worst run;
* ``cuts@plateau``: cuts within 200 epochs of the plateau's start (target >= 2), mean and the worst run;
* ``stop``: mean epoch where ``should_stop`` first holds on the plateau families (LR at min_lr, no improvement);
  "-" when it never did; and how often it fired on an improving family (should be never).

    python benchmarks/schedule_replay.py              # development families (the defaults were chosen here)
    python benchmarks/schedule_replay.py --held-out   # families never looked at while choosing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunetv2_topo.scheduling.replay import replay  # noqa: E402
from nnunetv2_topo.testing.simulated_logs import DEVELOPMENT_FAMILIES, HELD_OUT_FAMILIES, simulate  # noqa: E402
from nnunetv2_topo.trainers.config import resolve_config  # noqa: E402

SEED_RECIPE = {"plateau_metric": "val_loss", "plateau_patience": 8, "plateau_factor": 0.5, "plateau_threshold": 1e-4,
               "plateau_threshold_mode": "rel", "plateau_cooldown": 0, "plateau_min_lr": 1e-6,
               "plateau_final_anneal": 0.0}  # fmt: skip
"""The original recipe's plateau (patience 8, factor 0.5, torch's threshold 1e-4 rel, cooldown 0, min_lr 1e-6)."""


def _ema(s: float, patience: int, threshold: float = 1e-3, cooldown: int = 10, **more: object) -> dict:
    return {"plateau_metric": "val_loss_ema", "plateau_ema_smoothing": s, "plateau_patience": patience,
            "plateau_threshold": threshold, "plateau_threshold_mode": "abs", "plateau_cooldown": cooldown,
            "plateau_min_lr": 1e-5, "plateau_final_anneal": 0.2, **more}  # fmt: skip


SETTINGS: dict[str, dict] = {
    "seed recipe: val_loss, p8, 1e-4 rel, cd0, min 1e-6": SEED_RECIPE,
    "seed recipe on val_loss_ema s0.9": {**SEED_RECIPE, "plateau_metric": "val_loss_ema", "plateau_ema_smoothing": 0.9},
    "val_loss, p20, 1e-3 abs, cd10": {**_ema(0.95, 20), "plateau_metric": "val_loss"},
    "val_loss, p30, 1e-3 abs, cd10": {**_ema(0.95, 30), "plateau_metric": "val_loss"},
    "ema s0.8, p20, 1e-3 abs, cd10": _ema(0.8, 20),
    "ema s0.9, p15, 1e-3 abs, cd10": _ema(0.9, 15),
    "ema s0.9, p20, 1e-3 abs, cd10": _ema(0.9, 20),
    "ema s0.9, p25, 1e-3 abs, cd10": _ema(0.9, 25),
    "ema s0.9, p30, 1e-3 abs, cd10": _ema(0.9, 30),
    "ema s0.95, p15, 1e-3 abs, cd10": _ema(0.95, 15),
    "ema s0.95, p20, 1e-3 abs, cd10 (default)": _ema(0.95, 20),
    "ema s0.95, p25, 1e-3 abs, cd10": _ema(0.95, 25),
    "ema s0.95, p30, 1e-3 abs, cd10": _ema(0.95, 30),
    "ema s0.95, p20, 5e-4 abs, cd10": _ema(0.95, 20, threshold=5e-4),
    "ema s0.95, p20, 2e-3 abs, cd10": _ema(0.95, 20, threshold=2e-3),
    "ema s0.95, p20, 1e-3 abs, cd0": _ema(0.95, 20, cooldown=0),
    "ema s0.95, p20, 1e-4 rel, cd10": _ema(0.95, 20, plateau_threshold=1e-4, plateau_threshold_mode="rel"),
    "default, min_lr 1e-4": _ema(0.95, 20, plateau_min_lr=1e-4),
    "default, min_lr 1e-6": _ema(0.95, 20, plateau_min_lr=1e-6),
    "default, no final anneal": _ema(0.95, 20, plateau_final_anneal=0.0),
    "default, final anneal 0.3": _ema(0.95, 20, plateau_final_anneal=0.3),
    "default, min_lr 1e-4, no final anneal": _ema(0.95, 20, plateau_min_lr=1e-4, plateau_final_anneal=0.0),
}
"""Label -> plateau keys (complete, so a row does not move when a default changes); the other keys are the trainer's
defaults. The row marked ``(default)`` must equal the trainer's defaults (checked at start)."""


def evaluate(config: dict, families, seeds) -> dict:
    improving, cuts, stops, false_stops = [], [], [], 0
    base = config["initial_lr"]
    for fam in families:
        for seed in seeds:
            f = fam.with_seed(seed)
            r = replay(config, simulate(f).tolist(), num_epochs=f.num_epochs)
            if f.kind == "improving":
                improving.append(100.0 * np.mean(np.asarray(r.lr) >= 0.1 * base))
                false_stops += r.stop_epoch is not None
            else:
                cuts.append(sum(f.plateau_start <= c < f.plateau_start + 200 for c in r.cuts))
                if r.stop_epoch is not None:
                    stops.append(r.stop_epoch)
    return {"improving": improving, "cuts": cuts, "stops": stops, "false_stops": false_stops,
            "runs": len(families) * len(seeds)}  # fmt: skip


def table(families, seeds, settings: dict[str, dict] = SETTINGS) -> str:
    defaults = resolve_config()
    chosen = next(keys for label, keys in settings.items() if label.endswith("(default)"))
    drift = {k: (v, defaults[k]) for k, v in chosen.items() if defaults[k] != v}
    if drift:
        raise SystemExit(f"the '(default)' row differs from the trainer's defaults: {drift}")
    rows = ["| setting | improving: % epochs >= 10 % LR (mean / worst) | cuts@plateau (mean / worst) | stop epoch "
            "(plateau) | stops on improving |", "|---|---|---|---|---|"]  # fmt: skip
    for label, keys in settings.items():
        cfg = {**defaults, **keys}
        m = evaluate(cfg, families, seeds)
        imp, cuts = m["improving"], m["cuts"]
        ok = "✓" if min(imp) >= 60 and min(cuts) >= 2 else " "
        stop = f"{np.mean(m['stops']):.0f} ({len(m['stops'])}/{len(cuts)} runs)" if m["stops"] else "-"
        rows.append(f"| {ok} {label} | {np.mean(imp):.1f} / {min(imp):.1f} | {np.mean(cuts):.1f} / {min(cuts)} | "
                    f"{stop} | {m['false_stops']}/{len(imp)} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", action="store_true", help="the held-out families (seeds 100-109)")
    args = parser.parse_args(argv)
    families = HELD_OUT_FAMILIES if args.held_out else DEVELOPMENT_FAMILIES
    seeds = range(100, 110) if args.held_out else range(10)
    print(f"families ({'held out' if args.held_out else 'development'}; seeds {seeds.start}-{seeds.stop - 1}):")
    for f in families:
        print(f"  {f.name}")
    print("✓ = every run meets both targets\n")
    print(table(families, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
