"""Post-processing cost per volume: seconds per step (in ``STEP_ORDER``) and in all, on one core.

A simulated probability map (``nnunetv2_topo.testing.probability_maps.simulated_case``) of 320³ (the Kaggle
volume size) goes through the default chain (``PostprocessConfig()``) and through a chain with every step on; each
step is timed on the previous step's output (``postprocess_volume(..., timings=)``). Target: ≤ 10 s for the default
chain on one core (the Vesuvius 2nd place's post-processing took ~60 s per volume).
Also timed: fusing two models' maps (logit and prob).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/postprocess_cost.py              # 320³, ~2 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/postprocess_cost.py --size 160   # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def chain_times(p: np.ndarray, config) -> list[tuple[str, float]]:
    """(step, seconds) for each step the config runs, then ("total", seconds of postprocess_volume)."""
    from nnunetv2_topo.postprocessing import postprocess_volume

    out: list[tuple[str, float]] = []
    t = time.perf_counter()
    postprocess_volume(p, config, timings=out)
    out.append(("total (postprocess_volume)", time.perf_counter() - t))
    return out


def main(argv: list[str] | None = None) -> int:
    from nnunetv2_topo.postprocessing import Fusion, PostprocessConfig
    from nnunetv2_topo.testing.probability_maps import simulated_case

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t = time.perf_counter()
    p, _ = simulated_case(args.size, args.seed)
    print(f"simulated {args.size}³ probability map in {time.perf_counter() - t:.1f} s")
    default = PostprocessConfig()
    everything = replace(
        default,
        hysteresis_high=default.hysteresis_high or 0.85,
        plug_holes=True,
        plug_method="both",
        patch_holes=max(default.patch_holes, 100),
        closing_radius=(2, 2),
        fill_holes=True,
    )
    for title, config in (("default chain", default), ("every step on", everything)):
        print(f"-- {title}: {config}")
        for name, seconds in chain_times(p, config):
            print(f"  {name:<32} {seconds:7.2f} s")
    q = np.clip(p + np.float32(0.05), 0, 1)
    for mode in ("logit", "prob"):
        t = time.perf_counter()
        f = Fusion(mode)
        f.add_probability(p, 0.4)
        f.add_probability(q, 0.6)
        f.probability()
        print(f"fusion of 2 maps ({mode}) {time.perf_counter() - t:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
