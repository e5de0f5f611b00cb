"""Start-up time and memory of a training rank's background scoring process, before and after issue 26 item 3.

**before**: the process as it was (``multiprocessing`` spawn + ``ProcessPoolExecutor``, the scoring function in
``nnunetv2_topo.trainers.score_rounds``): the spawned child imports the parent's ``__main__`` again (here this script,
which, like the ``nnUNetv2_train`` console script, imports ``nnunetv2.run.run_training`` at its top) and the trainer
package, i.e. torch, nnU-Net's trainer, matplotlib. **after**: :class:`~nnunetv2_topo.evaluation.scoring_pool.
ScoringPool`, a ``python -c`` process that imports numpy, the metric and the image reader only.

Both are started from this one process (which holds torch and the trainer stack, as a rank does) one after the
other, each warmed up with the metric on a tiny pair (as at the start of training), then they score the same
synthetic ``--shape``³ sheet pair. Printed per process: wall and CPU seconds until the first result (start,
imports, warm-up), resident memory when idle after the warm-up, and peak resident memory after scoring the case
(``VmHWM`` of the process's own program), with the before/after ratios.

    python benchmarks/score_worker.py --shape 160 --json /tmp/score_worker.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import sys
import time
from pathlib import Path

# as the nnUNetv2_train console script: a multiprocessing-spawned child imports this module again, with these
from nnunetv2.run.run_training import run_training_entry  # noqa: F401

import nnunetv2_topo.trainers  # noqa: F401 (the trainer stack a rank holds)


def _status(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in MB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


def _cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def old_score(segmentation, gt_file, reader_class):
    """The old worker's task: its function lived in the trainer package (imported with it)."""
    from nnunetv2_topo.evaluation.score_worker import score_case
    from nnunetv2_topo.trainers import score_rounds  # noqa: F401

    return score_case(segmentation, gt_file, reader_class)


def old_warm_up() -> None:
    from nnunetv2_topo.evaluation.score_worker import warm_up
    from nnunetv2_topo.trainers import score_rounds  # noqa: F401

    warm_up()


def _sheet_pair(shape: int, folder: Path) -> tuple:
    import numpy as np
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    from nnunetv2_topo.io import write_tiff

    z = np.arange(shape)[:, None, None]
    y, x = np.meshgrid(np.arange(shape), np.arange(shape), indexing="ij")
    gt = np.zeros((shape,) * 3, dtype=np.uint8)
    for k in range(4):
        surface = (k + 0.5) * shape / 4 + 4 * np.sin(y / 17 + k) + 3 * np.cos(x / 13)
        gt[np.abs(z - surface[None]) < 2.5] = 1
    pred = gt.copy()
    flip = np.random.default_rng(0).random(pred.shape) < 0.002
    pred[flip] = 1 - pred[flip]
    path = folder / "gt.tif"
    write_tiff(path, gt)
    (folder / "gt.json").write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
    return pred, str(path), Tiff3DIO


def measure_before(pred, gt_file: str, reader) -> dict:
    t0 = time.perf_counter()
    executor = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        executor.submit(old_warm_up).result()
        first = time.perf_counter() - t0
        (pid,) = list(executor._processes)
        idle = _status(pid)
        cpu = _cpu_seconds(pid)
        result = executor.submit(old_score, pred, gt_file, reader).result()
        return {"first_result_s": first, "start_cpu_s": cpu, "idle_rss_mb": idle["VmRSS"],
                "peak_rss_mb": _status(pid)["VmHWM"], "score": result["score"]}  # fmt: skip
    finally:
        executor.shutdown(wait=True)


def measure_after(pred, gt_file: str, reader) -> dict:
    from nnunetv2_topo.evaluation.score_worker import worker_report
    from nnunetv2_topo.evaluation.scoring_pool import ScoringPool

    t0 = time.perf_counter()
    pool = ScoringPool(threads=1)
    try:
        report = pool.call(worker_report).result()  # queued behind the warm-up
        first = time.perf_counter() - t0
        pid = pool.pid
        idle = _status(pid)
        cpu = _cpu_seconds(pid)
        result = pool.submit(pred, gt_file, reader).result()
        return {"first_result_s": first, "start_cpu_s": cpu, "idle_rss_mb": idle["VmRSS"],
                "peak_rss_mb": _status(pid)["VmHWM"], "score": result["score"],
                "torch_imported": "torch" in report["modules"]}  # fmt: skip
    finally:
        pool.shutdown()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=160, help="cubic size of the scored sheet pair (default 160)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pred, gt_file, reader = _sheet_pair(args.shape, Path(tmp))
        before = measure_before(pred, gt_file, reader)
        after = measure_after(pred, gt_file, reader)
    assert abs(before["score"] - after["score"]) < 1e-12, (before["score"], after["score"])
    rows = [
        ("first result (start, imports, warm-up)", "first_result_s", "s wall"),
        ("CPU time until idle", "start_cpu_s", "s CPU"),
        ("resident when idle", "idle_rss_mb", "MB"),
        (f"peak resident after a {args.shape}³ case", "peak_rss_mb", "MB"),
    ]
    for label, key, unit in rows:
        print(f"{label:42s} before {before[key]:8.2f} {unit:6s} after {after[key]:8.2f} {unit:6s} "
              f"(after/before {after[key] / before[key]:.3f})")  # fmt: skip
    print(f"same score both ways: {after['score']:.6f}; torch in the new worker: {after['torch_imported']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "before": before, "after": after}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
