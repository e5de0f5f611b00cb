"""Post-processing ablation on synthetic predictions: the leaderboard score after each added step.

Ground truth: synthetic cases (``nnunetv2_topo.synth``). Prediction: a probability map of the true sheets with the
typical defects of a network output: voxel noise (speckle dust and pinholes after thresholding), small blobs,
1-voxel tunnels through sheets, short slits and a rough surface. Each row adds one step to the previous best.

    .venv/bin/python benchmarks/postprocess_ablation.py            # 4 volumes of 128³, ~3 min on 2 cores
    .venv/bin/python benchmarks/postprocess_ablation.py --quick    # 2 volumes of 96³
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
from scipy import ndimage


def synthetic_prediction(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities float32, label uint8)`` for one synthetic case."""
    from nnunetv2_topo.synth import synthesize_case

    rng = np.random.default_rng(seed)
    case = synthesize_case((size, size, size), rng)
    sheets = case.sheets > 0
    pred = sheets.copy()
    # rough surface: flip boundary voxels
    boundary = ndimage.binary_dilation(sheets) & ~ndimage.binary_erosion(sheets)
    pred ^= boundary & (rng.random(sheets.shape) < 0.08)
    # 1-voxel tunnels through the sheets (along axis 0, the sheet normal)
    fg = np.argwhere(sheets)
    for z, y, x in fg[rng.choice(len(fg), size // 4, replace=False)]:
        pred[max(z - 3, 0) : z + 4, y, x] = False
    # short slits
    for z, y, x in fg[rng.choice(len(fg), size // 16, replace=False)]:
        pred[max(z - 3, 0) : z + 4, y, x : x + 6] = False
    # small blobs (false positives)
    for z, y, x in rng.integers(2, size - 6, (size // 4, 3)):
        s = rng.integers(1, 4, 3)
        pred[z : z + s[0], y : y + s[1], x : x + s[2]] = True
    prob = np.where(pred, 0.85, 0.1).astype(np.float32) + rng.normal(0, 0.12, pred.shape).astype(np.float32)
    return np.clip(prob, 0, 1), case.label


def evaluate(cases, config) -> dict[str, float]:
    from nnunetv2_topo.inference.scoring import postprocess_and_score

    scores = [postprocess_and_score(p, gt, config) for p, gt in cases]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("score", "topo", "surface_dice", "voi_score")}


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.postprocessing import PostprocessConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    size, n = (96, 2) if args.quick else (args.size, args.cases)
    cases = [synthetic_prediction(size, seed) for seed in range(n)]
    none = PostprocessConfig(min_component_size=0, plug_holes=False, closing_radius=0, fill_holes=False)

    print(f"{n} synthetic predictions of {size}³; mean over cases")
    print(f"{'configuration':<44} {'score':>7} {'topo':>7} {'SD':>7} {'VOI':>7}  gain")
    last = None

    def show(label: str, config) -> float:
        r = evaluate(cases, config)
        gain = "" if last is None else f"{r['score'] - last:+.4f}"
        print(
            f"{label:<44} {r['score']:7.4f} {r['topo']:7.4f} {r['surface_dice']:7.4f} {r['voi_score']:7.4f}  {gain}",
            flush=True,
        )
        return r["score"]

    last = show("threshold 0.5 only", none)
    best_size, best = 0, last
    for min_size in (8, 32, 64, 256):
        s = show(f"  + remove components < {min_size}", replace(none, min_component_size=min_size))
        if s > best:
            best_size, best = min_size, s
    step = replace(none, min_component_size=best_size)
    last = best
    s = show(f"  min size {best_size} + plug 1-voxel holes", replace(step, plug_holes=True))
    if s > last:
        step, last = replace(step, plug_holes=True), s
    best_r = 0
    base = last
    for radius in (1, 2):
        s = show(f"  ... + component-safe closing r={radius}", replace(step, closing_radius=radius))
        if s > base:
            best_r, base = radius, s
    step, last = replace(step, closing_radius=best_r), base
    s = show("  ... + fill cavities", replace(step, fill_holes=True))
    if s > last:
        step, last = replace(step, fill_holes=True), s
    print(f"best: {step}")
    print(f"defaults: {PostprocessConfig()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
