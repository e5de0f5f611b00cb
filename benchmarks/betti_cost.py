"""What the ``betti_matching`` loss term costs per training step, against the rest of the step, side by side.

One process builds ``nnUNetTrainerTopoWarmup`` with the default loss (CE + Dice + clDice 0.5) and, for every crop
edge, the same loss plus ``betti_matching`` (weight 0.01, ``betti_matching_every: 1`` so every step pays it) on the
same plans and batches; their ``train_step`` (forward, loss, backward, clip, optimizer step) is timed round robin, so
load on the machine hits all alike. The term's own share is timed inside the step (its ``compute``: the host copy,
the persistent homology on the CPU, the gather of the matched values). With ``betti_matching_every: N`` the mean
cost per step is the term's time / N.

    python benchmarks/betti_cost.py                                   # CPU: patch 64³, nnU-Net's default network
    python benchmarks/betti_cost.py --device cuda --patch 128 --crops 32 48 64 --iterations 10   # a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import _batches, _build  # noqa: E402  (the benchmarks folder is no package)

DEFAULT = {"ce": 1.0, "dice": 1.0, "cldice": 0.5}


def _config(tmp: Path, name: str, crop: int | None) -> Path:
    weights = dict(DEFAULT) if crop is None else {**DEFAULT, "betti_matching": 0.01}
    cfg = {"loss_weights": weights, "warmup_epochs": 0, "seed": 0}
    if crop is not None:
        cfg.update(betti_matching_crop=crop, betti_matching_every=1)
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patch", type=int, default=64, help="cubic patch edge")
    parser.add_argument("--network", choices=["tiny", "default"], default="default")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crops", type=int, nargs="+", default=[16, 32, 48], help="betti_matching_crop values")
    parser.add_argument("--iterations", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from nnunetv2_topo.losses.betti_matching import BettiMatchingTerm

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    inner: list[tuple[float, float]] = []
    compute = BettiMatchingTerm.compute

    def timed(self, parts, **maps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = compute(self, parts, **maps)
        if out is not None:
            inner.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    BettiMatchingTerm.compute = timed
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "pre" / "Dataset998_Bench" / "bench").mkdir(parents=True)
        (tmp / "pre" / "Dataset998_Bench" / "bench" / "x.b2nd").touch()
        (tmp / "results").mkdir()
        os.environ.update(nnUNet_results=str(tmp / "results"), nnUNet_preprocessed=str(tmp / "pre"),
                          nnUNet_compile=str(args.compile).lower())  # fmt: skip
        settings = {"default loss": None, **{f"+ betti_matching crop {c}³": c for c in args.crops}}
        trainers = {}
        for i, (label, crop) in enumerate(settings.items()):
            os.environ.update(nnUNet_topo_config=str(_config(tmp, f"s{i}", crop)))
            trainers[label] = _build("nnUNetTrainerTopoWarmup", args, tmp / f"r{i}")
        batches, _ = _batches(next(iter(trainers.values())), args.patch, args.batch, 2)
        wall = {k: [] for k in trainers}
        cpu = {k: [] for k in trainers}
        term = {k: [] for k in trainers}
        with contextlib.redirect_stdout(io.StringIO()):
            for it in range(args.warmup + args.iterations):
                for label, trainer in trainers.items():
                    inner.clear()
                    sync()
                    t0, c0 = time.perf_counter(), time.process_time()
                    trainer.train_step(batches[it % 2])
                    sync()
                    if it >= args.warmup:
                        wall[label].append(time.perf_counter() - t0)
                        cpu[label].append(time.process_time() - c0)
                        term[label].append(sum(w for w, _ in inner))
    base_wall, base_cpu = statistics.median(wall["default loss"]), statistics.median(cpu["default loss"])
    print(f"device {args.device}, patch {args.patch}³, batch {args.batch}, network {args.network}, "
          f"{args.iterations} timed steps (median), torch threads {args.threads}\n")  # fmt: skip
    print("| setting | step wall ms | step CPU ms | × default (wall) | × default (CPU) | term wall ms | term share |")
    print("|---|---|---|---|---|---|---|")
    for label in trainers:
        w, c, t = statistics.median(wall[label]), statistics.median(cpu[label]), statistics.median(term[label])
        print(f"| {label} | {1000 * w:.0f} | {1000 * c:.0f} | {w / base_wall:.2f} | {c / base_cpu:.2f} | "
              f"{1000 * t:.0f} | {t / w:.0%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
