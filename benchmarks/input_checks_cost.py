"""Cost of the input checks added for issue 22, side by side with reading the volume they check, in one run.

For a synthetic label volume of --size^3 (uint8, values 0/1/2, LZW TIFF like the Kaggle data) prints the seconds of
``read_volume`` and of each check (ground-truth label values, label-map detection), and each check's time as a ratio
to the read; then the peak memory per voxel of generating one ``synth`` case (tracemalloc), the constant behind
``synth``'s memory check.

    .venv/bin/python benchmarks/input_checks_cost.py              # 320^3, the competition's size
    .venv/bin/python benchmarks/input_checks_cost.py --size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nnunetv2_topo.input_checks import label_map_problem, label_value_problem
from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.synth.generator import ScrollStyle, SheetTopology, synthesize_case


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=320, help="edge of the label cube (default: 320)")
    p.add_argument("--repeat", type=int, default=3, help="timings per measurement, best kept (default: 3)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.size,) * 3
    labels = np.zeros(shape, np.uint8)
    labels[:, ::9] = 1
    labels[:, :, -args.size // 8 :] = 2
    labels[rng.random(shape) < 0.01] = 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "label.tif"
        write_tiff(path, labels)
        read = best_of(lambda: read_volume(path), args.repeat)
    bad = labels.copy()
    bad[0, 0, :2] = (3, 255)
    binary = (labels == 1).astype(np.uint8)
    checks = {
        "label_value_problem, valid labels (evaluate/tune --gt, converter)": lambda: label_value_problem(labels),
        "label_value_problem, labels with 3 and 255 (the message lists them)": lambda: label_value_problem(bad),
        "label_map_problem, a 0/1 prediction": lambda: label_map_problem(binary),
        "label_map_problem, a label map (refused)": lambda: label_map_problem(labels),
    }
    print(f"{args.size}^3 uint8 labels: read_volume {read:.3f} s")
    for name, fn in checks.items():
        t = best_of(fn, args.repeat)
        print(f"  {name}: {t:.3f} s = {t / read:.2f} x the read")
    for synth_shape in ((48, 48, 48), (64, 96, 80)):
        tracemalloc.start()
        style = ScrollStyle.for_scroll("34117", 0)
        synthesize_case(synth_shape, np.random.default_rng(0), style, topology=SheetTopology())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"synth peak memory at {synth_shape}: {peak / np.prod(synth_shape):.1f} bytes per voxel")


if __name__ == "__main__":
    main()
