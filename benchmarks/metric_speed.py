"""Speed and memory of the leaderboard metric, side by side with a straightforward baseline, on one machine.

A realistic synthetic pair (wavy sheets from ``nnunetv2_topo.synth``, label-2 border and unlabeled regions; the
prediction = the sheets with dust, pinholes, a larger hole, a bridge between two sheets and noise inside the
ignore region). Each measurement runs in a fresh process: wall time, CPU time (incl. worker processes) and peak
resident memory (largest single process, and the sum over this process and its workers).

    .venv/bin/python benchmarks/metric_speed.py            # 320³, ~6 min on 2 cores
    .venv/bin/python benchmarks/metric_speed.py --quick    # 160³, ~1 min
    .venv/bin/python benchmarks/metric_speed.py --no-baseline --folder 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENGINE = "betti-matching-3d"  # this script measures the engine path; benchmarks/metric_rules.py the default (rules)
COMPETITION_ANCHOR_S = 78.0  # the competition's own code on one 320³ volume on this 2-core machine (reference doc)


def make_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from nnunetv2_topo.synth import synthesize_case

    rng = np.random.default_rng(seed)
    case = synthesize_case((size, size, size), rng)
    gt = case.label
    pred = (case.sheets > 0).astype(np.uint8)
    n = size
    coords = rng.integers(0, n, (max(20, n // 4), 3))
    pred[coords[:, 0], coords[:, 1], coords[:, 2]] = 1  # dust
    sheet_voxels = np.argwhere(pred)
    for z, y, x in sheet_voxels[rng.choice(len(sheet_voxels), max(10, n // 16), replace=False)]:
        pred[max(z - 1, 0) : z + 2, y, x] = 0  # pinholes through the sheet
    z, y, x = sheet_voxels[len(sheet_voxels) // 2]
    pred[max(z - 3, 0) : z + 4, y : y + n // 10, x : x + n // 10] = 0  # a larger hole
    pred[n // 4 : 3 * n // 4, n // 2 : n // 2 + 2, n // 3 : n // 3 + 2] = 1  # a bridge across sheets
    ignore = gt == 2
    pred[ignore & (rng.random(gt.shape) < 0.01)] = 1
    return pred, gt


def _measure(kind: str, data: str, workers: int, queue) -> None:
    import concurrent.futures as cf

    from nnunetv2_topo.metrics import engine, leaderboard
    from nnunetv2_topo.metrics.surface_dice import surface_dice
    from nnunetv2_topo.metrics.topo_score import topo_counts
    from nnunetv2_topo.metrics.voi import voi
    from nnunetv2_topo.testing import metric_reference as reference

    if kind.startswith("folder"):
        from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders

        t0, c0 = time.perf_counter(), time.process_time()
        out = evaluate_folders(
            Path(data) / "pred", Path(data) / "gt", num_processes=workers, progress=False, engine=ENGINE
        )
        result = out["mean"]
    else:
        d = np.load(data)
        pred, gt = leaderboard.binarize_pair(d["pred"], d["gt"])
        pool = engine.make_engine_pool(workers) if workers > 0 and kind in ("topo", "total") else None
        t0, c0 = time.perf_counter(), time.process_time()
        if kind == "total":
            result = leaderboard.start_score(d["pred"], d["gt"], pool, engine=ENGINE).result()
        elif kind == "topo":
            result = topo_counts(pred, gt, pool, engine=ENGINE).tolist()
        elif kind == "surface_dice":
            result = surface_dice(pred, gt)
        elif kind == "voi":
            result = voi(pred, gt)
        elif kind == "baseline_total":
            result = reference.leaderboard_score_reference(d["pred"], d["gt"])
        elif kind == "baseline_topo":
            result = reference.topo_counts_reference(pred, gt).tolist()
        elif kind == "baseline_surface_dice":
            result = reference.surface_dice_reference(pred, gt)
        elif kind == "baseline_voi":
            result = reference.voi_reference(pred, gt)
        else:
            raise ValueError(kind)
        if isinstance(pool, cf.ProcessPoolExecutor):
            pool.shutdown(wait=True)
    wall = time.perf_counter() - t0
    cpu_self = time.process_time() - c0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    kids = children.ru_maxrss / 2**20
    queue.put(
        {
            "wall": wall,
            "cpu": cpu_self + children.ru_utime + children.ru_stime,
            "peak_gb": max(own, kids),
            "peak_sum_gb": own + kids * max(workers, 1 if kids else 0),
            "result": result,
        }
    )


def in_fresh_process(target, *args) -> dict:
    """``target(*args, queue)`` in a newly spawned process (its own peak-RSS counter, no warm caches or imports);
    returns what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def measure(kind: str, data: str, workers: int = 0) -> dict:
    return in_fresh_process(_measure, kind, data, workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--quick", action="store_true", help="160³ instead of 320³")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow straightforward baseline")
    parser.add_argument("--folder", type=int, default=2, help="volumes in the folder benchmark (0 = skip)")
    args = parser.parse_args(argv)
    size = 160 if args.quick else args.size

    rows = []

    def row(label: str, kind: str, data: str, workers: int = 0) -> dict:
        r = measure(kind, data, workers)
        rows.append((label, r))
        print(
            f"{label:<42} wall {r['wall']:7.1f} s  cpu {r['cpu']:7.1f} s  peak {r['peak_gb']:5.2f} GB "
            f"(sum {r['peak_sum_gb']:5.2f} GB)",
            flush=True,
        )
        return r

    with tempfile.TemporaryDirectory() as tmp:
        pred, gt = make_pair(size)
        data = str(Path(tmp) / "pair.npz")
        np.savez(data, pred=pred, gt=gt)
        print(
            f"pair {size}³: gt sheets {int((gt == 1).sum())} voxels, ignore {float((gt == 2).mean()):.0%}, "
            f"prediction {int(pred.sum())} voxels",
            flush=True,
        )
        print("-- components (this implementation)")
        row("SurfaceDice@2 (ball dilation)", "surface_dice", data)
        row("VOI (cc3d + bincount)", "voi", data)
        row("TopoScore, engine in-process (1 core)", "topo", data, 0)
        row("TopoScore, 1 tuned engine worker", "topo", data, 1)
        row("TopoScore, 2 tuned engine workers", "topo", data, 2)
        print("-- whole score")
        one = row("leaderboard_score, 1 engine worker", "total", data, 1)
        two = row("leaderboard_score, 2 engine workers", "total", data, 2)
        if not args.no_baseline:
            print("-- straightforward baseline (engine on every tile serially, EDT SurfaceDice, sparse VOI)")
            row("baseline SurfaceDice (correlate + 2 EDTs)", "baseline_surface_dice", data)
            row("baseline VOI (sparse contingency)", "baseline_voi", data)
            base = row("baseline whole score (serial, no shortcuts)", "baseline_total", data)
            same = all(abs(base["result"][k] - two["result"][k]) <= 1e-9 for k in ("score", "topo", "surface_dice"))
            same &= base["result"]["counts"] == two["result"]["counts"]
            print(
                f"identical to the baseline: {same}; speed-up {base['wall'] / two['wall']:.2f}x (2 workers), "
                f"{base['wall'] / one['wall']:.2f}x (1 worker)"
            )
        if size == 320:
            print(
                f"vs the competition code anchor (~{COMPETITION_ANCHOR_S:.0f} s per 320³, reference doc): "
                f"{COMPETITION_ANCHOR_S / two['wall']:.2f}x"
            )
        print(
            f"score {two['result']['score']:.6f} topo {two['result']['topo']:.6f} "
            f"SD {two['result']['surface_dice']:.6f} VOI {two['result']['voi_score']:.6f} "
            f"counts {two['result']['counts']}"
        )
        if args.folder:
            from nnunetv2_topo.io import write_tiff

            folder = Path(tmp) / "folder"
            (folder / "pred").mkdir(parents=True)
            (folder / "gt").mkdir()
            for i in range(args.folder):
                p, g = make_pair(size, seed=i + 1)
                write_tiff(folder / "pred" / f"{i}.tif", p)
                write_tiff(folder / "gt" / f"{i}.tif", g)
            print(f"-- folder of {args.folder} volumes")
            f1 = row("evaluate_folders -np 1", "folder", str(folder), 1)
            f2 = row("evaluate_folders -np 2", "folder", str(folder), 2)
            print(f"folder scaling 1 -> 2 processes: {f1['wall'] / f2['wall']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
