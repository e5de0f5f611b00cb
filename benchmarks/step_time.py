"""Per-iteration time and peak memory of every TopoWarmup variant vs nnU-Net's ``nnUNetTrainer``, side by side.

All trainers are built in one process on the same synthetic plans and batches and their steps are timed
interleaved (round robin), so load on the machine hits all alike; the step is ``trainer.train_step(batch)``
(forward, loss, backward, clip, optimizer step). The
topology targets (skeleton, band) are computed on the CPU by the data-augmentation transform in real training;
that cost, with nnU-Net's deep-supervision downsampling, is reported separately as ``seg transforms ms/sample``
(it runs in the DA workers, in parallel to the step).

    python benchmarks/step_time.py --quick                    # CPU, tiny network, patch 32³ (a few minutes)
    python benchmarks/step_time.py --device cuda --patch 128  # GPU, nnU-Net's default 3d_fullres network

Target on GPU: the default TopoWarmup step <= 1.15x nnUNetTrainer.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json

TRAINERS = [
    "nnUNetTrainer",
    "nnUNetTrainerTopoWarmup",
    "nnUNetTrainerTopoWarmup_DiceFocal",
    "nnUNetTrainerTopoWarmup_SkelRecall",
    "nnUNetTrainerTopoWarmup_clDice",
    "nnUNetTrainerTopoWarmup_AdamW",
]


def _plans(patch: int, network: str, batch: int) -> dict:
    """nnU-Net-style plans for a cubic patch: 'default' = nnU-Net's 3d_fullres PlainConvUNet (32 -> 320 features,
    stages until the bottleneck is 4³), 'tiny' = 3 stages of 4, 8, 16 features."""
    if network == "tiny":
        features = [4, 8, 16]
    else:
        features, size = [32], patch
        while size // 2 >= 4 and len(features) < 6:
            size //= 2
            features.append(min(320, features[-1] * 2))
    n = len(features)
    if patch % 2 ** (n - 1):
        raise SystemExit(f"--patch {patch} must be a multiple of {2 ** (n - 1)} for {n} stages")
    return standalone_plans(
        [patch] * 3, features, batch, dataset_name="Dataset998_Bench", plans_name="benchPlans", data_identifier="bench"
    )


DATASET_JSON = vesuvius_dataset_json(1)


def _batches(trainer, patch: int, batch: int, n: int, seed: int = 0):
    """``n`` batches of sheet-like labels (0/1/2) through the trainer's own segmentation transforms (nnU-Net's
    deep-supervision downsampling with the topology targets inserted where the trainer inserts them), collated as
    nnU-Net's data loader does; returns (batches, segmentation-transform ms per sample)."""
    import numpy as np
    import torch
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    rng = np.random.default_rng(seed)
    scales = trainer._get_deep_supervision_scales()
    steps = [DownsampleSegForDSTransform(ds_scales=scales)] if scales is not None else []
    pipeline = ComposeTransforms(steps)
    if hasattr(trainer.loss, "insert_targets_transform"):
        pipeline = trainer.loss.insert_targets_transform(pipeline)
    elif hasattr(trainer, "_insert_topo_transform"):  # the trainer before its split into components
        pipeline = trainer._insert_topo_transform(pipeline)
    out, seg_times = [], []
    zz = np.arange(patch)[:, None, None]
    yy, xx = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    for _ in range(n):
        segs, images = [], []
        for _ in range(batch):
            surface = patch / 3 + 3 * np.sin(yy / 9 + rng.uniform(0, 6)) + 2 * np.cos(xx / 7)
            lab = (np.abs(zz - surface[None]) < 2).astype(np.int16)
            lab[:, :, -3:] = 2
            img = lab.astype(np.float32) + 0.7 * rng.standard_normal(lab.shape).astype(np.float32)
            t0 = time.perf_counter()
            segs.append(pipeline(image=None, segmentation=torch.from_numpy(lab[None]))["segmentation"])
            seg_times.append(time.perf_counter() - t0)
            images.append(torch.from_numpy(img[None]))
        if isinstance(segs[0], list):
            target = [torch.stack(t) for t in zip(*segs)]
        else:
            target = torch.stack(segs)
        out.append({"data": torch.stack(images), "target": target, "keys": []})
    return out, 1000 * statistics.mean(seg_times)


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    import contextlib

    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM (peak RSS) to the current RSS


def _build(name: str, args: argparse.Namespace, tmp: Path):
    import contextlib
    import io

    import torch

    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as cls
    else:
        import nnunetv2_topo.trainers as trainers

        cls = getattr(trainers, name)
    plans = copy.deepcopy(_plans(args.patch, args.network, args.batch))
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = cls(plans, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), torch.device(args.device))
        trainer.initialize()
        trainer.on_train_epoch_start()
    return trainer


SYNC_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")
"""Tensor methods that, on a CUDA tensor, make the host wait for the device."""


class SyncSites:
    """Count the call sites (file:line, outside torch) of :data:`SYNC_METHODS` hit while active.

    On the CPU no call actually waits, but every one of them on a tensor the step computed is a host-device
    synchronisation on CUDA (the step's tensors live on the device there); torch's own optimizer bookkeeping on CPU
    step counters is excluded. On CUDA, ``torch.cuda.set_sync_debug_mode`` is the exact alternative."""

    def __init__(self) -> None:
        self.sites: dict[str, int] = {}

    def __enter__(self) -> SyncSites:
        import torch

        self._saved = {m: getattr(torch.Tensor, m) for m in SYNC_METHODS}
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, self._wrap(name, original))
        return self

    def _wrap(self, name, original):
        def wrapper(tensor, *args, **kwargs):
            frame = sys._getframe(1)
            where = frame.f_code.co_filename
            host = getattr(tensor, "_on_host", False)  # a copy made by .cpu() below: reading it waits for nothing
            if f"{os.sep}torch{os.sep}" not in where and not host:
                site = f"{Path(where).name}:{frame.f_lineno} .{name}()"
                self.sites[site] = self.sites.get(site, 0) + 1
            result = original(tensor, *args, **kwargs)
            if name == "cpu":
                result._on_host = True
            return result

        return wrapper

    def __exit__(self, *exc) -> None:
        import torch

        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)


def count_sync_sites(trainers: dict, batches: dict) -> dict[str, dict[str, int]]:
    """One extra ``train_step`` per trainer with :class:`SyncSites` active: ``{trainer: {site: calls}}``."""
    import contextlib
    import io

    out = {}
    for name, trainer in trainers.items():
        with SyncSites() as counter, contextlib.redirect_stdout(io.StringIO()):
            trainer.train_step(batches[name][0])
        out[name] = counter.sites
    return out


def run_all(args: argparse.Namespace) -> list[dict]:
    """Build every trainer in this process, then time their steps interleaved (round robin), so load changes
    on the machine affect all of them alike. Memory: peak during the step above the memory before it."""
    import contextlib
    import io

    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "pre" / "Dataset998_Bench" / "bench").mkdir(parents=True)
        (tmp / "pre" / "Dataset998_Bench" / "bench" / "x.b2nd").touch()
        (tmp / "results").mkdir()
        os.environ.update(
            {
                "nnUNet_results": str(tmp / "results"),
                "nnUNet_preprocessed": str(tmp / "pre"),
                "nnUNet_compile": str(args.compile).lower(),
            }
        )
        os.environ.pop("nnUNet_topo_config", None)
        trainers = {name: _build(name, args, tmp) for name in args.trainers}
        batches = {}
        target_ms = {}
        for name, trainer in trainers.items():
            batches[name], target_ms[name] = _batches(trainer, args.patch, args.batch, 2)
        times: dict[str, list[float]] = {n: [] for n in trainers}
        peaks: dict[str, list[float]] = {n: [] for n in trainers}
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        with contextlib.redirect_stdout(io.StringIO()):
            for i in range(args.warmup + args.iterations):
                for name, trainer in trainers.items():
                    sync()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                        before = torch.cuda.memory_allocated() / 2**20
                    else:
                        _reset_peak_rss()
                        before = _rss_mib("VmRSS")
                    t0 = time.perf_counter()
                    trainer.train_step(batches[name][i % 2])
                    sync()
                    dt = time.perf_counter() - t0
                    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mib("VmHWM")) - before
                    if i >= args.warmup:
                        times[name].append(dt)
                        peaks[name].append(peak)
        syncs = count_sync_sites(trainers, batches)
        return [
            {
                "trainer": n,
                "step_ms": 1000 * statistics.median(times[n]),
                "peak_mib": max(peaks[n]),
                "target_ms": target_ms[n],
                "sync_sites": syncs[n],
            }
            for n in trainers
        ]


def ema_update_ms(args: argparse.Namespace, repeats: int = 20) -> float:
    """Median time of one weight-EMA update (``WeightEMA.update``, what ``ema_decay > 0`` adds to every step) on
    the same network, device and plans."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_topo.trainers.weight_ema import WeightEMA

    cm = PlansManager(_plans(args.patch, args.network, args.batch)).get_configuration("3d_fullres")
    net = get_network_from_plans(
        cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import, 1, 2,
        deep_supervision=True,
    ).to(args.device)  # fmt: skip
    ema = WeightEMA(net, 0.999)
    times = []
    for _ in range(repeats + 2):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ema.update(net)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patch", type=int, default=None, help="cubic patch size (default: 32 on CPU, 128 on GPU)")
    parser.add_argument("--network", choices=["tiny", "default"], default=None, help="default: tiny on CPU")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=None, help="timed steps (default: 5 CPU, 30 GPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--trainers", nargs="+", default=TRAINERS)
    parser.add_argument("--quick", action="store_true", help="CPU smoke: patch 32, tiny network, 3 steps")
    parser.add_argument("--json", help="also write the table as JSON here")
    parser.add_argument(
        "--compile", action="store_true",
        help="nnUNet_compile=true: nnU-Net compiles the network (CUDA only; give --warmup >= 2 for the compilation)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.patch = args.patch or (128 if gpu else 32)
    args.network = args.network or ("default" if gpu else "tiny")
    args.iterations = args.iterations or (30 if gpu else 5)
    if args.quick:
        args.patch, args.network, args.iterations, args.warmup = 32, "tiny", 3, 1

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = run_all(args)
    base = next((r for r in rows if r["trainer"] == "nnUNetTrainer"), rows[0])
    print(
        f"\nstep time, {args.device}, patch {args.patch}³, batch {args.batch}, network {args.network}, "
        f"compile {'on' if args.compile else 'off'}, "
        f"median of {args.iterations} interleaved steps"
    )
    header = f"{'trainer':38s} {'step ms':>9s} {'x base':>7s} {'peak MiB':>9s} {'x base':>7s}"
    print(f"{header} {'seg transforms ms/sample':>25s}")
    for r in rows:
        r["time_ratio"] = r["step_ms"] / base["step_ms"]
        r["memory_ratio"] = r["peak_mib"] / base["peak_mib"]
        print(
            f"{r['trainer']:38s} {r['step_ms']:9.1f} {r['time_ratio']:7.2f} {r['peak_mib']:9.0f} "
            f"{r['memory_ratio']:7.2f} {r['target_ms']:25.2f}"
        )
    print("peak = memory above the resident model during one step (CUDA: allocated; CPU: RSS, coarse)")
    print("\nhost-device sync sites per train_step (calls that wait for the device on CUDA; file:line, calls):")
    for r in rows:
        sites = r["sync_sites"]
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(sites.items())) or "none"
        print(f"{r['trainer']:38s} {sum(sites.values()):2d} calls at {len(sites)} sites: {listed}")
    ema_ms = ema_update_ms(args)
    print(f"weight EMA (ema_decay > 0): +{ema_ms:.2f} ms per step ({ema_ms / base['step_ms']:.3f}x the base step)")
    rows.append({"trainer": "weight EMA update", "step_ms": ema_ms, "time_ratio": ema_ms / base["step_ms"]})
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
