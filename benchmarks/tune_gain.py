"""What ``nnunetv2_topo tune`` gains on simulated probability maps, measured on cases it did not see.

Ground truth: synthetic cases (``nnunetv2_topo.synth``). Probability maps: the true sheets with the failure modes of
a real network output: under-confident sheets (whole sheets and frayed edges below 0.5), pinholes and larger holes
(low probability through the sheet), dust (small confident blobs), weak bridges between near-touching sheets, and
smooth noise. The cases are split in two halves: ``tune`` (the CLI, as a user runs it) chooses the configuration on
the first half; the raw argmax, the default ``postprocess`` and the tuned configuration are then scored on the
second half with the exact metric. Also printed: the tuning cost, the tile-cache hit rate and the ablation table.

    .venv/bin/python benchmarks/tune_gain.py                 # 16 cases of 128³: tune on 8, score on 8 (2 cores)
    .venv/bin/python benchmarks/tune_gain.py --quick         # 8 cases of 64³
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
from scipy import ndimage


def simulated_probabilities(sheets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 foreground probability map of the sheets (``sheets``: 0 = none, k = sheet k) with the failure
    modes listed in the module docstring."""
    fg = sheets > 0
    shape = fg.shape
    size = min(shape)
    p = np.where(fg, 0.85, 0.03).astype(np.float32)
    # under-confident sheets: about half of them sit below 0.5 everywhere
    for k in np.unique(sheets[fg]):
        if rng.random() < 0.5:
            p[sheets == k] = rng.uniform(0.3, 0.45)
    # frayed, under-confident edges: the sheets' boundary voxels lose confidence
    edge = fg & ~ndimage.binary_erosion(fg)
    p[edge] *= 0.7
    # weak bridges: where two sheets nearly touch (both within 2 voxels), blobs of 0.2-0.3 in the gap
    near = np.zeros(shape, np.uint8)
    for k in np.unique(sheets[fg]):
        near += ndimage.binary_dilation(sheets == k, iterations=2)
    gap = np.argwhere((near >= 2) & ~fg)
    for z, y, x in gap[rng.choice(len(gap), min(len(gap), size // 3), replace=False)] if len(gap) else []:
        box = p[max(z - 2, 0) : z + 3, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        np.maximum(box, np.float32(rng.uniform(0.2, 0.3)), out=box)
    # pinholes (1-voxel columns) and holes (discs) through one sheet, along the stacking axis 1
    pts = np.argwhere(fg)
    for z, y, x in pts[rng.choice(len(pts), size // 2, replace=False)]:
        column = sheets[z, :, x] == sheets[z, y, x]
        p[z, column, x] = 0.15
    zz, xx = np.ogrid[: shape[0], : shape[2]]
    for z, y, x in pts[rng.choice(len(pts), max(2, size // 32), replace=False)]:
        disc = (zz - z) ** 2 + (xx - x) ** 2 <= int(rng.integers(2, 5)) ** 2
        p[disc[:, None, :] & (sheets == sheets[z, y, x])] = 0.2
    # dust: small confident blobs anywhere
    for z, y, x in rng.integers(2, size - 6, (size // 2, 3)):
        s = rng.integers(1, 4, 3)
        p[z : z + s[0], y : y + s[1], x : x + s[2]] = rng.uniform(0.6, 0.95)
    p += rng.normal(0, 0.04, shape).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(p, 0.5), 0, 1).astype(np.float32)


def write_cases(folder: Path, n: int, size: int, seed: int) -> tuple[Path, Path]:
    """``folder/prob/<id>.tif`` (float32 maps) and ``folder/gt/<id>.tif`` for ``n`` synthetic cases."""
    import tifffile

    from nnunetv2_topo.io import write_tiff
    from nnunetv2_topo.synth import synthesize_case

    prob_dir, gt_dir = folder / "prob", folder / "gt"
    prob_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        case = synthesize_case((size, size, size), rng)
        tifffile.imwrite(prob_dir / f"case{i:03d}.tif", simulated_probabilities(case.sheets, rng))
        write_tiff(gt_dir / f"case{i:03d}.tif", case.label)
    return prob_dir, gt_dir


def score(prob_dir: Path, gt_dir: Path, config) -> dict[str, float]:
    """Mean exact score of ``config`` applied to every map of ``prob_dir``."""
    from nnunetv2_topo.inference.probabilities import read_probability
    from nnunetv2_topo.inference.scoring import postprocess_and_score
    from nnunetv2_topo.io import read_volume

    results = [
        postprocess_and_score(read_probability(p), read_volume(gt_dir / p.name), config)
        for p in sorted(prob_dir.glob("*.tif"))
    ]
    return {k: float(np.mean([r[k] for r in results])) for k in ("score", "topo", "surface_dice", "voi_score")}


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.postprocessing.config_file import load_postprocess_file
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig
    from nnunetv2_topo.tuning.space import describe, no_postprocessing

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cases", type=int, default=16, help="total; half tune, half held out")
    parser.add_argument("-np", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-budget", type=float, default=None, help="passed to tune (minutes)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the cases and the report in this folder")
    args = parser.parse_args(argv)
    size, n = (64, 8) if args.quick else (args.size, args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        t0 = time.monotonic()
        tune_prob, tune_gt = write_cases(work / "tune", n // 2, size, args.seed)
        held_prob, held_gt = write_cases(work / "heldout", n - n // 2, size, args.seed + 1000)
        print(f"{n} simulated cases of {size}³ in {time.monotonic() - t0:.0f} s; tuning on {n // 2}", flush=True)
        out = work / "postprocess.json"
        cmd = [sys.executable, "-m", "nnunetv2_topo.cli.main", "tune", "--input", str(tune_prob), "--gt", str(tune_gt)]
        cmd += ["--output", str(out), "-np", str(args.np), "--overwrite", "--quiet"]
        if args.time_budget is not None:
            cmd += ["--time-budget", str(args.time_budget)]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        tune_s = time.monotonic() - t0
        pf = load_postprocess_file(out)
        m = pf.measured
        print(
            f"tune: {tune_s:.0f} s wall, {m['configurations_evaluated']} configurations x {n // 2} cases, "
            f"tile cache hit rate {m['tile_cache']['hit_rate']:.1%}"
        )
        print(f"tuned configuration: {describe(pf.steps)}")
        rows = [
            ("raw argmax (threshold 0.5)", no_postprocessing()),
            ("default postprocess", PostprocessConfig()),
            ("tuned (on the other half)", pf.steps),
        ]
        print(f"\nheld-out half ({n - n // 2} cases):")
        print(f"{'':30s} {'score':>7} {'topo':>7} {'SD':>7} {'VOI':>7}")
        held = {}
        for label, config in rows:
            r = held[label] = score(held_prob, held_gt, config)
            print(f"{label:30s} {r['score']:7.4f} {r['topo']:7.4f} {r['surface_dice']:7.4f} {r['voi_score']:7.4f}")
        gain = held[rows[2][0]]["score"] - held[rows[1][0]]["score"]
        print(f"held-out gain of tuned over default: {gain:+.4f}")
        print(json.dumps({"tune_seconds": tune_s, "heldout_gain": gain, "measured": m}, default=str)[:400])
    return 0


if __name__ == "__main__":
    sys.exit(main())
