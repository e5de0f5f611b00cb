"""What ``nnunetv2_topo tune`` gains on simulated probability maps, measured on cases it did not see.

Maps: ``nnunetv2_topo.testing.probability_maps`` (the one simulator of the benchmarks and tests: under-confident thin
sheets, a halo, weak bridges between near-touching sheets, holes, pinholes, dust, correlated noise), for one or
more model calibrations (``--calibration``: ``nominal``, ``over-confident``, ``under-confident``: the same failure
modes, different best thresholds). Per calibration the cases are split in two halves: ``tune`` (the CLI, as a
user runs it) chooses the configuration on the first half; the raw argmax, the default ``postprocess`` and the
tuned configuration are then scored on the second half with the exact metric. Also printed: the tuning cost, the
tile-cache hit rate and the ablation table of the tuning half.

Note: ``PostprocessConfig()``'s defaults were chosen on ``nominal`` maps of this simulator
(``benchmarks/postprocess_ablation.py``), so on ``nominal`` the default is itself tuned to the kind of maps; the
other calibrations show what a fixed default loses on a model calibrated differently.

    .venv/bin/python benchmarks/tune_gain.py                 # nominal, 16 cases of 128³: tune on 8, score on 8
    .venv/bin/python benchmarks/tune_gain.py --size 96 --cases 8 --calibration all
    .venv/bin/python benchmarks/tune_gain.py --quick         # 8 cases of 64³, every calibration
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_cases(folder: Path, n: int, size: int, seed: int, calibration: str) -> tuple[Path, Path]:
    """``folder/prob/<id>.tif`` (float32 maps) and ``folder/gt/<id>.tif`` for ``n`` synthetic cases."""
    import tifffile

    from nnunetv2_topo.io import write_tiff
    from nnunetv2_topo.testing.probability_maps import simulated_case

    prob_dir, gt_dir = folder / "prob", folder / "gt"
    prob_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        prob, label = simulated_case(size, (seed, i), calibration)
        tifffile.imwrite(prob_dir / f"case{i:03d}.tif", prob)
        write_tiff(gt_dir / f"case{i:03d}.tif", label)
    return prob_dir, gt_dir


def score(prob_dir: Path, gt_dir: Path, config) -> dict[str, float]:
    """Mean exact score of ``config`` applied to every map of ``prob_dir``."""
    from nnunetv2_topo.evaluation.case_scoring import postprocess_and_score
    from nnunetv2_topo.io import read_volume
    from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS
    from nnunetv2_topo.postprocessing.probabilities import read_probability

    results = [
        postprocess_and_score(read_probability(p), read_volume(gt_dir / p.name), config)
        for p in sorted(prob_dir.glob("*.tif"))
    ]
    return {k: float(np.mean([r[k] for r in results])) for k in SCORE_FIELDS}


def ablation_section(report: Path) -> str:
    text = report.read_text()
    start = text.index("## Ablation")
    return text[start : text.index("## Best configurations", start)].strip()


def run_calibration(work: Path, calibration: str, size: int, n: int, args: argparse.Namespace) -> dict:
    """Tune on the first half, score argmax/default/tuned on the second; prints the rows and returns them."""
    from nnunetv2_topo.postprocessing.config_file import load_postprocess_file
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig
    from nnunetv2_topo.tuning.space import describe, no_postprocessing

    t0 = time.monotonic()
    n_tune = n // 2
    tune_prob, tune_gt = write_cases(work / "tune", n_tune, size, args.seed, calibration)
    held_prob, held_gt = write_cases(work / "heldout", n - n_tune, size, args.seed + 1000, calibration)
    print(f"\n=== {calibration}: {n} simulated cases of {size}³ in {time.monotonic() - t0:.0f} s", flush=True)
    out = work / "postprocess.json"
    cmd = [sys.executable, "-m", "nnunetv2_topo.cli.main", "tune", "--input", str(tune_prob), "--gt", str(tune_gt)]
    cmd += ["--output", str(out), "-np", str(args.np), "--overwrite", "--quiet"]
    if args.time_budget is not None:
        cmd += ["--time-budget-minutes", str(args.time_budget)]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    tune_s = time.monotonic() - t0
    pf = load_postprocess_file(out)
    m = pf.measured
    cv = m["cross_validated"]
    print(
        f"tune on {n_tune} cases: {tune_s:.0f} s wall, {m['configurations_evaluated']} configurations, "
        f"tile cache hit rate {m['tile_cache']['hit_rate']:.1%} ({m['tile_cache']['hits']} hits, "
        f"{m['tile_cache']['computed']} computed); in-sample {m['score_tuned']:.4f} vs default "
        f"{m['score_default']:.4f}; cross-validated {cv['heldout_score']:.4f} ({cv['gain']:+.4f})"
    )
    print(f"tuned configuration: {describe(pf.steps)}")
    print(ablation_section(work / "tune_report.md"))
    rows = [
        ("raw argmax (threshold 0.5)", no_postprocessing()),
        ("default postprocess", PostprocessConfig()),
        ("tuned (on the other half)", pf.steps),
    ]
    print(f"held-out half ({n - n_tune} cases):")
    print(f"{'':30s} {'score':>7} {'topo':>7} {'SD':>7} {'VOI':>7}")
    held = {}
    for label, config in rows:
        r = held[label] = score(held_prob, held_gt, config)
        print(f"{label:30s} {r['score']:7.4f} {r['topo']:7.4f} {r['surface_dice']:7.4f} {r['voi_score']:7.4f}")
    gain = held[rows[2][0]]["score"] - held[rows[1][0]]["score"]
    print(f"held-out gain of tuned over default: {gain:+.4f}", flush=True)
    return {"calibration": calibration, "tune_seconds": tune_s, "heldout": held, "heldout_gain": gain, "measured": m}


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.testing.probability_maps import CALIBRATIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cases", type=int, default=16, help="total per calibration; half tune, half held out")
    parser.add_argument("-np", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration",
        action="append",
        choices=[*CALIBRATIONS, "all"],
        help="model calibration of the maps (repeatable; default nominal; all = every one)",
    )
    parser.add_argument("--quick", action="store_true", help="8 cases of 64³, every calibration")
    parser.add_argument("--time-budget", type=float, default=None, help="passed to tune (minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the cases and the reports in this folder")
    args = parser.parse_args(argv)
    size, n = (64, 8) if args.quick else (args.size, args.cases)
    names = args.calibration or (["all"] if args.quick else ["nominal"])
    names = list(CALIBRATIONS) if "all" in names else list(dict.fromkeys(names))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(run_calibration((args.keep or Path(tmp)) / name, name, size, n, args))
    print("\nsummary (held-out half): calibration, argmax, default, tuned, gain over default")
    for r in results:
        s = [v["score"] for v in r["heldout"].values()]
        print(f"  {r['calibration']:16s} {s[0]:.4f} {s[1]:.4f} {s[2]:.4f} {r['heldout_gain']:+.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
