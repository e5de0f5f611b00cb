"""Cost of carrying the topology targets (skeleton, band) through nnU-Net's deep-supervision downsampling, per
sample in the data-augmentation workers: the transform before ``DownsampleSegForDSTransform`` (every scale gets the
extra channels, which the loss never reads below full resolution) against after it (full resolution only, the
trainer's order now). Same labels, same transforms, interleaved repeats; the bytes are the segmentation tensors one
sample hands to the loader (int16).

    python benchmarks/target_channels.py              # patch 128³, nnU-Net's 5 scales for 3d_fullres
    python benchmarks/target_channels.py --patch 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunetv2_topo.transforms import TopoTargetsTransform


def _labels(patch: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    zz = np.arange(patch)[:, None, None]
    yy, xx = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    lab = np.zeros((patch,) * 3, np.int16)
    for k in range(3):
        surface = patch * (k + 1) / 4 + 3 * np.sin(yy / 9 + rng.uniform(0, 6)) + 2 * np.cos(xx / 7)
        lab[np.abs(zz - surface[None]) < 2] = 1
    lab[:, :, : patch // 3] = 2
    return torch.from_numpy(lab[None])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--scales", type=int, default=5, help="deep-supervision scales (nnU-Net 128³: 5)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--targets", nargs="+", default=["skeleton", "band"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DA worker
    ds = DownsampleSegForDSTransform(ds_scales=[[0.5**i] * 3 for i in range(args.scales)])
    topo = TopoTargetsTransform(args.targets, 2)
    orders = {"targets before downsampling (old)": [topo, ds], "targets after downsampling (now)": [ds, topo]}
    times: dict[str, list[float]] = {k: [] for k in orders}
    sizes: dict[str, int] = {}
    for r in range(args.repeats + 1):
        labels = _labels(args.patch, r)
        for name, steps in orders.items():
            t0 = time.perf_counter()
            out = ComposeTransforms(steps)(image=None, segmentation=labels.clone())["segmentation"]
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
            sizes[name] = sum(s.numel() * s.element_size() for s in out)
    base = statistics.median(times["targets before downsampling (old)"])
    print(f"patch {args.patch}³, {args.scales} scales, targets {args.targets}, median of {args.repeats}, 1 thread")
    print(f"{'order':36s} {'ms/sample':>10s} {'x old':>6s} {'MiB/sample':>11s}")
    for name in orders:
        ms = statistics.median(times[name])
        print(f"{name:36s} {1e3 * ms:10.1f} {ms / base:6.2f} {sizes[name] / 2**20:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
