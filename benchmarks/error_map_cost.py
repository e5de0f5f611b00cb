"""What ``evaluate --errors`` costs next to a plain ``evaluate``, side by side on the same folder, in one run.

The folder holds synthetic cases (``benchmarks/metric_speed.make_pair``: wavy sheets, 56 % ignore, dust, pinholes, a
hole, a bridge, noise in the ignore region) with more planted errors: one sheet missed, one cut in two, a false
positive blob, and two sheets bridged. Each measurement is ``evaluate_folders`` in a freshly spawned process
(its CPU time counts every thread), plain and with the error maps alternately, ``--repeats`` times; the ratio
of the medians is the cost.
The scores of the two are compared exactly, and the error run's summary table is printed.

    .venv/bin/python benchmarks/error_map_cost.py            # 2 cases of 320³, ~3 min on 2 idle cores
    .venv/bin/python benchmarks/error_map_cost.py --quick    # 2 cases of 160³
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metric_speed import in_fresh_process, make_pair  # noqa: E402


def _bridge(pred: np.ndarray, gt: np.ndarray, a: np.ndarray, b: np.ndarray, rng) -> None:
    """Join sheets ``a`` and ``b`` (masks) by the shortest of 300 random straight lines, 2 voxels thick; ignored
    voxels on it become labelled background (else the metric would not see the bridge)."""
    pa, pb = np.argwhere(a), np.argwhere(b)
    best = None
    for _ in range(300):
        u, v = pa[rng.integers(len(pa))], pb[rng.integers(len(pb))]
        line = np.round(np.linspace(u, v, int(np.abs(v - u).max()) + 1)).astype(int)
        if best is None or len(line) < len(best):
            best = line
    thick = np.concatenate([best + d for d in ([0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1])])
    thick = tuple(np.minimum(thick, np.array(gt.shape) - 1).T)
    gt[thick] = np.where(gt[thick] == 2, 0, gt[thick])
    pred[thick] = 1


def make_case(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_pair`` plus a missed sheet, a sheet cut in two, two sheets bridged and a false-positive blob."""
    import cc3d
    from scipy import ndimage

    pred, gt = make_pair(size, seed)
    rng = np.random.default_rng(seed)
    sheets, n = cc3d.connected_components(gt == 1, connectivity=26, return_N=True)
    order = np.argsort(np.bincount(sheets.ravel())[1:])[::-1] + 1  # largest first
    if n >= 3:
        pred[sheets == order[2]] = 0  # the third largest sheet missed
        cut = sheets == order[0]  # the largest cut across its extent along axis 2
        xs = np.flatnonzero(cut.any(axis=(0, 1)))
        mid = xs[len(xs) // 2]
        pred[:, :, mid : mid + 3][cut[:, :, mid : mid + 3]] = 0
        _bridge(pred, gt, sheets == order[0], sheets == order[1], rng)
    far = ndimage.distance_transform_edt(gt == 0)
    z, y, x = np.unravel_index(int(np.argmax(far)), far.shape)
    r = int(min(4, far[z, y, x] - 2))
    if r >= 1:
        pred[z - r : z + r, y - r : y + r, x - r : x + r] = 1  # a false-positive blob far from every sheet
    return pred, gt


def _run(folder: str, errors: str | None, workers: int, queue) -> None:
    from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders

    writer = None
    if errors is not None:
        from nnunetv2_topo.evaluation.error_maps import ErrorMapWriter

        writer = ErrorMapWriter(errors, dust_size=500)
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = evaluate_folders(Path(folder) / "pred", Path(folder) / "gt", workers, False, diagnose=writer)
    summary = writer.write_summary() if writer is not None else None
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    peak = c1.ru_maxrss / 2**20  # KiB -> GB
    queue.put(
        {"wall": time.perf_counter() - t0, "cpu": cpu, "peak": peak, "cases": result["cases"], "summary": summary}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--quick", action="store_true", help="160³ instead of 320³")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-np", "--num-processes", dest="workers", type=int, default=2)
    args = parser.parse_args(argv)
    size = 160 if args.quick else args.size
    from nnunetv2_topo.evaluation.error_maps import format_error_summary
    from nnunetv2_topo.io import write_tiff

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pred").mkdir()
        (folder / "gt").mkdir()
        for i in range(args.cases):
            pred, gt = make_case(size, seed=i + 1)
            write_tiff(folder / "pred" / f"{i}.tif", pred)
            write_tiff(folder / "gt" / f"{i}.tif", gt)
        print(f"{args.cases} case(s) of {size}³, -np {args.workers}, {args.repeats} repeat(s), alternating", flush=True)
        runs: dict[str, list[dict]] = {"plain": [], "errors": []}
        for r in range(args.repeats):
            for kind in ("plain", "errors"):
                out = str(folder / f"errors{r}") if kind == "errors" else None
                res = in_fresh_process(_run, str(folder), out, args.workers)
                runs[kind].append(res)
                print(
                    f"  {kind:<7} wall {res['wall']:6.1f} s  cpu {res['cpu']:6.1f} s  peak {res['peak']:5.2f} GB",
                    flush=True,
                )
        same = all(run["cases"] == runs["plain"][0]["cases"] for run in runs["plain"] + runs["errors"])
        med = {k: {m: statistics.median(run[m] for run in v) for m in ("wall", "cpu", "peak")} for k, v in runs.items()}
        print(
            f"median: plain wall {med['plain']['wall']:.1f} s cpu {med['plain']['cpu']:.1f} s; --errors wall "
            f"{med['errors']['wall']:.1f} s cpu {med['errors']['cpu']:.1f} s"
        )
        print(
            f"--errors / plain: CPU {med['errors']['cpu'] / med['plain']['cpu']:.2f}x, "
            f"wall {med['errors']['wall'] / med['plain']['wall']:.2f}x (target <= 2x); peak memory "
            f"{med['plain']['peak']:.2f} -> {med['errors']['peak']:.2f} GB; scores identical: {same}"
        )
        print(format_error_summary(runs["errors"][-1]["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
