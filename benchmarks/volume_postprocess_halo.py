"""How far chunked post-processing (whole-volume ``predict``) differs from the in-memory result.

The global steps (threshold, hysteresis, dust) are exact across chunk borders; the local steps (plugging, height-map
patching, closing, filling) run per chunk with a halo and can differ where a decision depends on voxels further away
than the halo. This script measures that difference on simulated probability maps (synthetic sheets with holes,
pinholes, bridges and dust): voxels that differ, and the competition score of both results against the label.

    python benchmarks/volume_postprocess_halo.py [--size 128] [--seeds 0 1 2] [--chunks 32 64] [--halos 8 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "default chain (dust 500, patch 25)": {},
    "every local step (plug both, closing 1/1, patch 100, fill)": {
        "plug_holes": True,
        "plug_method": "both",
        "closing_radius": (1, 1),
        "patch_holes": 100,
        "fill_holes": True,
    },
}


def chunked(p: np.ndarray, config, chunk: int, halo: int, work: Path) -> np.ndarray:
    """The whole-volume route: class codes stored as Zarr chunks, then the finalize passes (one thread)."""
    import zarr

    from nnunetv2_topo.scroll.finalize import make_runner
    from nnunetv2_topo.scroll.postprocess import WorkArrays, postprocess_chunks

    codes = (p > config.threshold).astype(np.uint8)
    if config.hysteresis_high is not None:
        codes += p > config.hysteresis_high
    url = str(work / "pp.zarr")
    group = zarr.open_group(url, mode="w")
    group.create_array("classes", shape=p.shape, chunks=(chunk,) * 3, dtype="uint8")[...] = codes
    group.create_array("out", shape=p.shape, chunks=(chunk,) * 3, dtype="uint8", fill_value=0)
    postprocess_chunks(WorkArrays(url, "classes", "out", "bench"), config, make_runner(progress=False, threads=1), halo)
    return group["out"][...]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="edge of the simulated cubes (default 128)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--chunks", type=int, nargs="+", default=[32, 64], help="output chunk edges")
    ap.add_argument("--halos", type=int, nargs="+", default=[8, 16], help="halo widths (predict uses 16)")
    args = ap.parse_args(argv)

    from nnunetv2_topo.metrics.leaderboard import leaderboard_score
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume
    from nnunetv2_topo.testing.probability_maps import simulated_case

    cases = [simulated_case(args.size, seed) for seed in args.seeds]
    print(f"{len(cases)} simulated case(s) of {args.size}³ (seeds {args.seeds})\n")
    print("| steps | chunk | halo | voxels differing (mean share, max count) | score in memory | score chunked", end="")
    print(" | chunked s |")
    print("|---|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, kwargs in CONFIGS.items():
            config = PostprocessConfig(**kwargs)
            in_memory = [postprocess_volume(p, config) for p, _ in cases]
            memory_scores = [leaderboard_score(m, label)["score"] for m, (_, label) in zip(in_memory, cases)]
            for chunk in args.chunks:
                for halo in args.halos:
                    t0 = time.perf_counter()
                    out = [chunked(p, config, chunk, halo, work) for p, _ in cases]
                    seconds = time.perf_counter() - t0
                    diff = [int(np.count_nonzero(a != b)) for a, b in zip(out, in_memory)]
                    share = np.mean([d / a.size for d, a in zip(diff, out)])
                    scores = [leaderboard_score(o, label)["score"] for o, (_, label) in zip(out, cases)]
                    print(
                        f"| {name} | {chunk} | {halo} | {share:.5%} (max {max(diff)}) | "
                        f"{np.mean(memory_scores):.4f} | {np.mean(scores):.4f} | {seconds:.1f} |"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
