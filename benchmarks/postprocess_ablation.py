"""Post-processing ablation on simulated probability maps: the leaderboard score of each step, added greedily.

Maps: ``nnunetv2_topo.testing.probability_maps`` (``nominal`` calibration; the one simulator of the benchmarks and
tests): a foreground probability map of *all* true sheets of a synthetic case (annotated or not, as a network
sees them) with the failure modes of a real model output: under-confident thin sheets (a third of the sheets at
0.38-0.55), a faint halo, weak bridges (0.45-0.7) between near-touching sheets, holes (discs up to ~10 voxels
across), pinholes (1-voxel columns), dust (confident blobs of 1 to 512 voxels) and correlated noise.

Each block of rows varies one step on top of the best configuration so far and keeps the best value (a gain under
0.001 keeps the simpler option listed first); the last rows compare argmax, the old defaults and the defaults.

    .venv/bin/python benchmarks/postprocess_ablation.py            # 4 volumes of 96³, ~4 min on 2 cores
    .venv/bin/python benchmarks/postprocess_ablation.py --quick    # 3 volumes of 80³
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np


def evaluate(cases, config) -> dict[str, float]:
    from nnunetv2_topo.evaluation.case_scoring import postprocess_and_score

    scores = [postprocess_and_score(p, gt, config) for p, gt in cases]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("score", "topo", "surface_dice", "voi_score")}


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.postprocessing import PostprocessConfig
    from nnunetv2_topo.testing.probability_maps import simulated_case
    from nnunetv2_topo.tuning.space import no_postprocessing

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    size, n = (80, 3) if args.quick else (args.size, args.cases)
    t0 = time.perf_counter()
    cases = [simulated_case(size, seed) for seed in range(n)]
    dust_scale = (size / 320) ** 3  # the 1st place's 20k voxels at 320³, scaled to this volume size
    none = no_postprocessing()  # argmax: threshold 0.5, every step off

    print(f"{n} simulated probability maps of {size}³; mean over cases")
    print(f"{'configuration':<52} {'score':>7} {'topo':>7} {'SD':>7} {'VOI':>7}")
    cache: dict = {}  # a configuration met again (the previous best) is not scored twice

    def show(label: str, config) -> float:
        if config not in cache:
            cache[config] = evaluate(cases, config)
        r = cache[config]
        print(
            f"{label:<52} {r['score']:7.4f} {r['topo']:7.4f} {r['surface_dice']:7.4f} {r['voi_score']:7.4f}",
            flush=True,
        )
        return r["score"]

    def block(title: str, base, options: dict) -> tuple:
        print(f"-- {title}")
        best_cfg, best = None, -1.0
        for label, cfg in options.items():
            s = show(f"  {label}", cfg)
            if s > best + 0.001 or best_cfg is None:  # a tie keeps the simpler option listed first
                best_cfg, best = cfg, s
        return best_cfg, best

    argmax = show("argmax (threshold 0.5, no steps)", none)
    cfg, _ = block(
        "threshold", none, {f"threshold {t}": replace(none, threshold=t) for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)}
    )
    hyst = {"no hysteresis": cfg}
    for high in (0.7, 0.85):
        for low in (round(cfg.threshold - 0.1, 2), cfg.threshold):
            if 0 < low < high:
                hyst[f"hysteresis {low}/{high}"] = replace(cfg, threshold=low, hysteresis_high=high)
    cfg, _ = block("hysteresis (low/high)", cfg, hyst)
    sizes = sorted({0, 64, int(20000 * dust_scale), int(60000 * dust_scale)})
    cfg, _ = block(
        f"dust removal (20k voxels at 320³ = {int(20000 * dust_scale)} here)",
        cfg,
        {f"min size {s}": replace(cfg, min_component_size=s) for s in sizes},
    )
    plug = {"no plugging": replace(cfg, plug_holes=False)}
    plug.update({f"plug {m}": replace(cfg, plug_holes=True, plug_method=m) for m in ("lut", "axis", "both")})
    cfg, _ = block("1-voxel holes: lookup table vs axis test", cfg, plug)
    cfg, _ = block(
        "height-map patching (max hole pixels)",
        cfg,
        {f"patch holes {h}": replace(cfg, patch_holes=h) for h in (0, 25, 100)},
    )
    cfg, _ = block(
        "component-safe closing (z, yx)",
        cfg,
        {f"closing {r}": replace(cfg, closing_radius=r) for r in ((0, 0), (1, 1), (2, 1), (2, 2))},
    )
    cfg, best = block("fill cavities", cfg, {"fill off": cfg, "fill on": replace(cfg, fill_holes=True)})
    recheck = {"chosen chain": cfg}
    recheck.update({f"  + plug {m}": replace(cfg, plug_holes=True, plug_method=m) for m in ("lut", "axis")})
    cfg, best = block("plugging re-checked on the final chain", cfg, recheck)
    print("-- summary")
    old = replace(none, min_component_size=64, plug_holes=True, plug_method="axis")
    old_score = show("old defaults (0.5, dust 64, axis plug)", old)
    default = PostprocessConfig()
    default_score = show("PostprocessConfig() defaults", default)
    print(f"best chain: {cfg}")
    print(
        f"best {best:.4f} vs argmax {argmax:.4f} ({best - argmax:+.4f}); defaults {default_score:.4f}; "
        f"old defaults {old_score:.4f}; {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
