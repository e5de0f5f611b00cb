"""``tune`` choosing the ensemble: three simulated models, scored on cases it did not see.

Models (``nnunetv2_topo.testing.probability_maps.ENSEMBLE_MODELS``, the same sheets per case, each model with its
own random draw of the failure modes): ``good``; ``good-other``, as good with independent errors and another
calibration (logit + 1); ``weak`` (more under-confident sheets, holes, pinholes, dust, stronger bridges and noise).
The cases are split in two halves. On the first half ``tune`` (the CLI, as a user runs it) chooses:

- the ensemble and the steps, without ``--weights`` (weights, fusion and steps searched);
- the steps for each model alone;
- the steps for the equal-weight logit fusion (``--weights 1 1 1 --fusion logit``).

Each chosen ``postprocess.json`` is then applied to the second half (fused as the file says, post-processed) and
scored with the exact metric; the ensemble's held-out gain over the best single model and over the equal-weight
fusion is given per case with a bootstrap 95 % interval. Printed too: each run's wall and CPU time (the tune
process and its workers), and the intervals of the ensemble run's report.

    .venv/bin/python benchmarks/tune_ensemble.py                 # 8 + 8 cases of 64³
    .venv/bin/python benchmarks/tune_ensemble.py --size 48 --cases 8 --np 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("good", "good-other", "weak")


def write_cases(root: Path, n: int, size: int, seed: int) -> dict[str, Path]:
    """``root/<model>/<id>.tif`` (float32 maps of each model) and ``root/gt/<id>.tif``."""
    import tifffile

    from nnunetv2_topo.io import write_tiff
    from nnunetv2_topo.testing.probability_maps import simulated_models

    dirs = {k: root / k for k in (*MODELS, "gt")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        maps, label = simulated_models(size, (seed, i), list(MODELS))
        for name, p in zip(MODELS, maps, strict=True):
            tifffile.imwrite(dirs[name] / f"case{i:03d}.tif", p)
        write_tiff(dirs["gt"] / f"case{i:03d}.tif", label)
    return dirs


def run_tune(name: str, dirs: dict[str, Path], models: tuple[str, ...], extra: list[str], out: Path, np_: int) -> dict:
    cmd = [sys.executable, "-m", "nnunetv2_topo.cli.main", "tune"]
    for m in models:
        cmd += ["--input", str(dirs[m])]
    cmd += ["--gt", str(dirs["gt"]), "--output", str(out), "-np", str(np_), "--quiet", "--overwrite", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"tune {name:22s} {wall:7.1f} s wall, {cpu:7.1f} s CPU", flush=True)
    return {"name": name, "models": models, "file": out, "wall_s": wall, "cpu_s": cpu}


def heldout_scores(run: dict, dirs: dict[str, Path]) -> np.ndarray:
    """Per held-out case: the exact score of the run's postprocess.json applied to that case's maps."""
    from nnunetv2_topo.evaluation.case_scoring import postprocess_and_score
    from nnunetv2_topo.io import read_volume
    from nnunetv2_topo.postprocessing import fuse_probability_files, load_postprocess_file

    pf = load_postprocess_file(run["file"])
    out = []
    for gt in sorted(dirs["gt"].glob("*.tif")):
        maps = [dirs[m] / gt.name for m in run["models"]]
        prob = fuse_probability_files(maps, pf.fusion.weights, pf.fusion.mode)
        out.append(postprocess_and_score(prob, read_volume(gt), pf.steps)["score"])
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.postprocessing import load_postprocess_file
    from nnunetv2_topo.tuning.ensemble import describe_fusion
    from nnunetv2_topo.tuning.space import describe
    from nnunetv2_topo.tuning.stability import paired

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cases", type=int, default=16, help="total; half tune, half held out")
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the cases and the reports in this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        n_tune = args.cases // 2
        t0 = time.monotonic()
        tune_dirs = write_cases(work / "tune", n_tune, args.size, args.seed)
        held_dirs = write_cases(work / "heldout", args.cases - n_tune, args.size, args.seed + 1000)
        print(f"{args.cases} simulated cases of {args.size}³ (3 models each) in {time.monotonic() - t0:.0f} s")
        runs = [run_tune("ensemble (searched)", tune_dirs, MODELS, [], work / "ens" / "postprocess.json", args.np)]
        for m in MODELS:
            runs.append(run_tune(f"{m} alone", tune_dirs, (m,), [], work / m / "postprocess.json", args.np))
        runs.append(
            run_tune(
                "equal weights (logit)",
                tune_dirs,
                MODELS,
                ["--weights", "1", "1", "1", "--fusion", "logit"],
                work / "equal" / "postprocess.json",
                args.np,
            )
        )
        for r in runs:
            r["heldout"] = heldout_scores(r, held_dirs)
        ens = runs[0]
        pf = load_postprocess_file(ens["file"])
        print(f"\nchosen on the tuning half: {describe_fusion(pf.fusion)}; {describe(pf.steps)}")
        print(f"\nheld-out half ({args.cases - n_tune} cases), exact score of each tuned file:")
        print(f"{'':24s} {'in-sample':>9} {'held-out':>9}  {'wall s':>7} {'CPU s':>7}")
        for r in runs:
            insample = load_postprocess_file(r["file"]).measured["score_tuned"]
            r["insample"] = insample
            print(f"{r['name']:24s} {insample:9.4f} {r['heldout'].mean():9.4f}  {r['wall_s']:7.1f} {r['cpu_s']:7.1f}")
        singles = runs[1:4]
        best_single = max(singles, key=lambda r: r["heldout"].mean())
        comparisons = {}
        for other in (best_single, runs[4]):
            d = paired(ens["heldout"], other["heldout"])
            comparisons[other["name"]] = d
            lo, hi = d["ci"]
            print(
                f"ensemble − {other['name']:22s} {d['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] over held-out cases"
                f"{' (includes 0)' if d['includes_zero'] else ''}"
            )
        print(
            f"ensemble tune cost: {ens['cpu_s'] / sum(r['cpu_s'] for r in singles):.2f}x the CPU of the three "
            f"single-model tunes together, {ens['cpu_s'] / runs[4]['cpu_s']:.2f}x the equal-weight tune; "
            f"{pf.measured['configurations_evaluated']} settings, tile cache hit rate "
            f"{pf.measured['tile_cache']['hit_rate']:.1%}"
        )
        print("\nintervals in the ensemble run's report (tuning half):")
        for row in pf.measured["stability"]:
            d, cv = row["difference"], row["cross_validated"]
            cvs = "" if cv is None else f"; cross-validated {cv['mean']:+.4f} [{cv['ci'][0]:+.4f}, {cv['ci'][1]:+.4f}]"
            print(
                f"  {row['axis']:24s} {row['chosen']:28s} vs {row['runner_up']:28s} {d['mean']:+.4f} "
                f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] wins {row['win_rate']:.0%}{cvs}"
            )
        for row in pf.measured["without_model"]:
            d = row["difference"]
            print(f"  without {Path(row['input']).name:16s} {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]")
        cv = pf.measured["cross_validated"]
        lo, hi = cv["gain_ci"]
        print(f"  cross-validated gain over equal weights + default steps: {cv['gain']:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        if args.json is not None:
            args.json.write_text(
                json.dumps(
                    {
                        "runs": [
                            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items() if k != "file"}
                            for r in runs
                        ],
                        "weights": pf.fusion.weights,
                        "comparisons": comparisons,
                    },
                    indent=1,
                    default=str,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
