"""Conversion speed of nnUNetv2_convert_vesuvius: hard links vs copies, side by side in one run.

Synthesises N cases (Kaggle layout), then converts them with --mode link and --mode copy (each with the full check
that decodes every volume, and with --verify header), and prints seconds, cases/s, MB/s of TIFF data and the ratio
to copy mode. Also prints the synthesis time of one 96^3 case.

    .venv/bin/python benchmarks/convert_speed.py                 # 100 cases of 64^3, -np 2
    .venv/bin/python benchmarks/convert_speed.py --quick         # 100 cases of 32^3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nnunetv2_topo.conversion.convert_vesuvius import convert
from nnunetv2_topo.synth import make_case
from nnunetv2_topo.synth.layout import write_kaggle_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=100, help="training cases (default: 100)")
    p.add_argument("--size", type=int, default=64, help="edge length of each cube (default: 64)")
    p.add_argument("-np", dest="num_processes", type=int, default=2, help="converter processes (default: 2)")
    p.add_argument("--quick", action="store_true", help="32^3 volumes")
    args = p.parse_args()
    size = 32 if args.quick else args.size

    t = time.perf_counter()
    make_case((96, 96, 96), np.random.default_rng(0))
    t96 = time.perf_counter() - t

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_kaggle_dataset(tmp / "kaggle", args.cases, (size,) * 3, 0, seed=0, num_processes=2, progress=False)
        t_synth = time.perf_counter() - t
        # same file system as the input, so links are possible
        os.environ["nnUNet_raw"] = str(tmp / "raw")  # noqa: SIM112 (nnU-Net's own name)
        os.environ.pop("nnUNet_preprocessed", None)
        os.environ.pop("nnUNet_results", None)

        rows = []
        for i, (mode, verify) in enumerate(
            [("copy", "full"), ("link", "full"), ("copy", "header"), ("link", "header")]
        ):
            s = convert(
                tmp / "kaggle", 100 + i, mode=mode, verify=verify, num_processes=args.num_processes, progress=False
            )
            assert s.methods == {mode: args.cases}, s.methods
            rows.append((mode, verify, s.seconds, s.nbytes))
        copied = sum(f.stat().st_size for f in (tmp / "raw").glob("Dataset100_*/images*/*.tif"))
        copied += sum(f.stat().st_size for f in (tmp / "raw").glob("Dataset100_*/labelsTr/*.tif"))

    print(
        f"synthesis: one 96^3 case {t96:.3f} s; {args.cases} cases of {size}^3 written in {t_synth:.1f} s (2 processes)"
    )
    print(f"conversion of {args.cases} cases of {size}^3 (image + label TIFFs, LZW), -np {args.num_processes}:")
    print(f"{'mode':<6} {'verify':<7} {'seconds':>8} {'cases/s':>8} {'MB/s':>8} {'vs copy':>8}")
    base = {v: sec for m, v, sec, _ in rows if m == "copy"}
    for mode, verify, sec, nb in rows:
        print(
            f"{mode:<6} {verify:<7} {sec:8.2f} {args.cases / sec:8.1f} {nb / 1e6 / sec:8.1f} {base[verify] / sec:7.2f}x"
        )
    print(f"TIFF data: {rows[0][3] / 1e6:.1f} MB; extra disk used by copy mode: {copied / 1e6:.1f} MB")
    print("link mode shares the input's inodes: no extra disk for the volumes")


if __name__ == "__main__":
    main()
