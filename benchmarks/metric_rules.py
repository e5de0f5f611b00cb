"""The Betti-matching rules against the Betti-Matching-3D engine: equivalence on random pairs, and cost per tile
and per volume, side by side. Every measurement runs in a fresh process (wall time, peak resident memory).

    .venv/bin/python benchmarks/metric_rules.py --pairs 3000            # equivalence run only (sizes 8-32)
    .venv/bin/python benchmarks/metric_rules.py --tiles --volume        # costs (~6 min on 2 cores, 4.9 GB peak)
    .venv/bin/python benchmarks/metric_rules.py --tiles --engine-iid    # also the engine on iid noise (> 200 s)

Tiles are 160³: "sheet" = one tile of the 320³ pair of ``metric_speed.py`` (binarized, ignore region removed),
"noisy" = its prediction with 10 % of the voxels flipped, "iid" = two independent 50 % noise tiles.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from metric_speed import COMPETITION_ANCHOR_S, in_fresh_process, make_pair  # noqa: E402


def equivalence(pairs: int, low: int, high: int, seed: int) -> dict:
    from betti_families import random_pair
    from tqdm import tqdm

    from nnunetv2_topo.metrics.engine import engine_counts
    from nnunetv2_topo.metrics.topo_score import tile_counts

    rng = np.random.default_rng(seed)
    families: collections.Counter = collections.Counter()
    nonzero = collections.Counter()
    mismatches = []
    t_engine = t_rules = 0.0
    for _ in tqdm(range(pairs), desc="pairs", unit="pair"):
        pred, gt, name = random_pair(rng, low, high)
        t0 = time.perf_counter()
        want = engine_counts(pred, gt)
        t1 = time.perf_counter()
        got = tile_counts(pred, gt, engine="rules")
        t_rules += time.perf_counter() - t1
        t_engine += t1 - t0
        families.update(name.split("/")[:2])
        nonzero.update(f"m{k}>0" for k in range(3) if want[k, 0] > 0)
        if min(pred.shape) <= 2:
            families["axis of length 1-2"] += 1
        if not np.array_equal(got, want):
            mismatches.append((name, pred.shape, got.tolist(), want.tolist()))
    return {
        "pairs": pairs,
        "families": dict(families),
        "nonzero": dict(nonzero),
        "mismatches": mismatches,
        "engine_s": t_engine,
        "rules_s": t_rules,
    }


def _tile(kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    from nnunetv2_topo.metrics.leaderboard import binarize_pair

    rng = np.random.default_rng(7)
    if kind == "iid":
        return rng.random((size,) * 3) < 0.5, rng.random((size,) * 3) < 0.5
    pred, gt = binarize_pair(*make_pair(2 * size))
    pred, gt = pred[:size, :size, :size].copy(), gt[:size, :size, :size].copy()
    if kind == "noisy":
        pred ^= rng.random(pred.shape) < 0.1
    return pred, gt


def _run(task: dict, queue) -> None:
    import os

    os.environ.update(task.get("env", {}))
    if task["what"] == "first_call":  # import numba and the kernels, compile or load them, run a tiny tile
        t0 = time.perf_counter()
        from nnunetv2_topo.metrics.betti_rules import rules_matched

        rules_matched(np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), bool), 10, 10)
        queue.put({"wall": time.perf_counter() - t0})
        return
    from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders
    from nnunetv2_topo.metrics import engine as eng
    from nnunetv2_topo.metrics.betti_rules import rules_matched
    from nnunetv2_topo.metrics.leaderboard import leaderboard_score

    out: dict = {}
    if task["what"] in ("volume", "folder"):  # load the compiled kernels first (measured on its own: first_call)
        rules_matched(np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), bool), 10, 10)
    if task["what"] == "tile":
        d = np.load(task["data"])
        pred, gt = d["pred"], d["gt"]
        if task["engine"] == "rules":  # load the compiled kernels first (measured on its own: first_call)
            rules_matched(np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), bool), 10, 10)
        base = _peak_gb()
        t0, c0 = time.perf_counter(), _cpu_s()
        if task["engine"] == "rules":
            matched, steps = rules_matched(pred, gt, 2**62, 2**62)
            out["result"] = matched.tolist()
            out["steps"] = steps
        else:
            out["result"] = eng.engine_counts(pred, gt)[:, 0].tolist()
        out["wall"], out["cpu"] = time.perf_counter() - t0, _cpu_s() - c0
        out["input_gb"] = base
    elif task["what"] == "volume":
        d = np.load(task["data"])
        t0, c0 = time.perf_counter(), _cpu_s()
        out["result"] = leaderboard_score(d["pred"], d["gt"], workers=task["workers"], engine=task["engine"])
        eng.shutdown_pools()
        out["wall"], out["cpu"] = time.perf_counter() - t0, _cpu_s() - c0
    else:
        t0, c0 = time.perf_counter(), _cpu_s()
        res = evaluate_folders(task["pred"], task["gt"], num_processes=task["workers"], progress=False)
        out["wall"], out["cpu"] = time.perf_counter() - t0, _cpu_s() - c0
        out["result"] = {"mean": res["mean"], "fallback_tiles": res["fallback_tiles"]["total"]}
    eng.shutdown_pools()
    out["peak_gb"] = _peak_gb()
    out["peak_worker_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    queue.put(out)


def _peak_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss not inherited from a spawning parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(task: dict) -> dict:
    return in_fresh_process(_run, task)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=0, help="random pairs for the equivalence run (0 = skip)")
    parser.add_argument("--low", type=int, default=8, help="smallest axis length of the random pairs")
    parser.add_argument("--high", type=int, default=32, help="largest axis length of the random pairs")
    parser.add_argument("--seed", type=int, default=1129)
    parser.add_argument("--tiles", action="store_true", help="160³ tiles: rules vs engine")
    parser.add_argument("--engine-iid", action="store_true", help="also run the engine on the iid tile (> 200 s)")
    parser.add_argument("--volume", action="store_true", help="one 320³ volume and a folder of two")
    parser.add_argument("--size", type=int, default=160, help="tile size (volumes are twice as large)")
    args = parser.parse_args(argv)

    if args.pairs:
        r = equivalence(args.pairs, args.low, args.high, args.seed)
        print(f"equivalence: {r['pairs']} pairs, sizes {args.low}-{args.high}, mismatches {len(r['mismatches'])}")
        print(f"  families {json.dumps(r['families'])}")
        print(f"  pairs with matches {json.dumps(r['nonzero'])}")
        print(f"  time: engine {r['engine_s']:.1f} s, rules {r['rules_s']:.1f} s")
        for m in r["mismatches"][:10]:
            print("  MISMATCH", m)

    if args.tiles:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"NNUNETV2_TOPO_NUMBA_CACHE": str(Path(tmp) / "numba")}
            cold = measure({"what": "first_call", "env": env})
            warm = measure({"what": "first_call", "env": env})
            print(
                f"first call in a process (import + kernels): {cold['wall']:.1f} s with an empty cache, "
                f"{warm['wall']:.2f} s cached"
            )
        tile_dir = tempfile.TemporaryDirectory()
        for kind in ("sheet", "noisy", "iid"):
            pred, gt = _tile(kind, args.size)
            data = str(Path(tile_dir.name) / f"{kind}.npz")
            np.savez(data, pred=pred, gt=gt)
            del pred, gt
            rules = measure({"what": "tile", "data": data, "engine": "rules"})
            line = (
                f"{kind:<6} {args.size}³  rules {rules['wall']:6.2f} s (cpu {rules['cpu']:6.2f} s), "
                f"peak {rules['peak_gb']:.2f} GB "
                f"(inputs {rules['input_gb']:.2f} GB), m = {rules['result']}, {rules['steps']:,} steps"
            )
            if kind != "iid" or args.engine_iid:
                e = measure({"what": "tile", "data": data, "engine": "engine"})
                line += (
                    f" | engine {e['wall']:6.2f} s (cpu {e['cpu']:6.2f} s), "
                    f"peak {e['peak_gb']:.2f} GB, m = {e['result']}"
                    f" | {e['wall'] / rules['wall']:.1f}x faster (cpu {e['cpu'] / rules['cpu']:.1f}x), "
                    f"same: {e['result'] == rules['result']}"
                )
            print(line, flush=True)
        tile_dir.cleanup()

    if args.volume:
        size = 2 * args.size
        with tempfile.TemporaryDirectory() as tmp:
            data = str(Path(tmp) / "pair.npz")
            pred, gt = make_pair(size)
            np.savez(data, pred=pred, gt=gt)
            walls = {}
            for workers in (0, 1, 2):
                r = measure({"what": "volume", "data": data, "workers": workers, "engine": "auto"})
                walls[workers] = r["wall"]
                print(
                    f"leaderboard_score {size}³, rules, workers={workers}: wall {r['wall']:6.2f} s, "
                    f"cpu {r['cpu']:6.2f} s, "
                    f"peak {r['peak_gb']:.2f} GB (workers {r['peak_worker_gb']:.2f} GB), "
                    f"score {r['result']['score']:.6f}, counts {r['result']['counts']}",
                    flush=True,
                )
            e = measure({"what": "volume", "data": data, "workers": 1, "engine": "betti-matching-3d"})
            print(
                f"leaderboard_score {size}³, engine, 1 worker: wall {e['wall']:6.2f} s, "
                f"cpu {e['cpu']:6.2f} s, peak {e['peak_gb']:.2f} GB "
                f"(worker {e['peak_worker_gb']:.2f} GB), counts {e['result']['counts']}; rules 2 workers "
                f"{e['wall'] / walls[2]:.1f}x faster; vs the competition code (~{COMPETITION_ANCHOR_S:.0f} s): "
                f"{COMPETITION_ANCHOR_S / walls[2]:.1f}x",
                flush=True,
            )
            from nnunetv2_topo.io import write_tiff

            folder = Path(tmp) / "folder"
            (folder / "pred").mkdir(parents=True)
            (folder / "gt").mkdir()
            for i in range(2):
                p, g = make_pair(size, seed=i + 1)
                write_tiff(folder / "pred" / f"{i}.tif", p)
                write_tiff(folder / "gt" / f"{i}.tif", g)
            f = measure({"what": "folder", "pred": str(folder / "pred"), "gt": str(folder / "gt"), "workers": 2})
            print(
                f"evaluate_folders, 2 volumes {size}³, -np 2: wall {f['wall']:6.2f} s, "
                f"cpu {f['cpu']:6.2f} s, peak {f['peak_gb']:.2f} GB, "
                f"fallback tiles {f['result']['fallback_tiles']}; {3600 * 2 / f['wall']:.0f} volumes per hour",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
