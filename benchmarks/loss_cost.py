"""Cost of the topology losses next to nnU-Net's own training step, measured side by side in one run.

For an nnU-Net 3d_fullres PlainConvUNet (deep supervision on) it times forward+backward of
  - the network alone (trivial loss), and a full training step with nnU-Net's default loss (DC_and_CE + DS),
  - nnU-Net's default loss alone, every term alone, and the full compound (all seven terms) on fixed logits,
  - a full training step with the compound,
and reports time and memory relative to the network's forward+backward. Time: wall-clock on GPU; on CPU the
process's CPU seconds with one torch thread (robust on a shared machine). Memory: on GPU the peak allocated
(``torch.cuda.max_memory_allocated``) above the tensors alive before the call; on CPU the bytes autograd saves for
backward (the activation memory; CPU peak allocation is not observable from torch). It also times the CPU target
transforms (skeleton, band) per 128³ patch in one worker thread.

    python benchmarks/loss_cost.py            # CPU: patch 64³, batch 2 (a few minutes on 2 cores)
    python benchmarks/loss_cost.py --quick    # fewer repeats, patch 48³
    python benchmarks/loss_cost.py --device cuda   # GPU: patch 128³, batch 2, AMP (fp16 autocast)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from nnunetv2_topo.losses import TERM_NAMES, TopologyLoss, default_ds_weights
from nnunetv2_topo.transforms import TopoTargetsTransform, compute_band, compute_skeleton, split_topo_targets

FULL = {name: 1.0 for name in TERM_NAMES}


def build_network(patch: int, device: torch.device) -> torch.nn.Module:
    """nnU-Net's default 3d_fullres PlainConvUNet for an isotropic patch (stages down to 4³, 32→320 features)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n_stages = int(np.log2(patch // 4)) + 1
    net = PlainConvUNet(
        input_channels=1,
        n_stages=n_stages,
        features_per_stage=[min(32 * 2**i, 320) for i in range(n_stages)],
        conv_op=torch.nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n_stages,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
        n_conv_per_stage=[2] * n_stages,
        num_classes=2,
        n_conv_per_stage_decoder=[2] * (n_stages - 1),
        conv_bias=True,
        norm_op=torch.nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )
    return net.to(device)


def nnunet_default_loss(n_scales: int) -> torch.nn.Module:
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_CE_loss(
        {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=2,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    return DeepSupervisionWrapper(loss, default_ds_weights(n_scales))


def synthetic_labels(patch: int, seed: int, across_slices: bool = True) -> np.ndarray:
    """Vesuvius-like labels from the project's synthetic generator. Its sheets are stacked along axis 0; with
    ``across_slices`` the axes are swapped so the sheets cross the z-slices, as papyrus crosses scroll z-slices."""
    from nnunetv2_topo.synth.generator import make_case

    _, label = make_case((patch, patch, patch), np.random.default_rng(seed))
    label = label.astype(np.int16)
    return np.ascontiguousarray(label.transpose(1, 0, 2)) if across_slices else label


def make_batch(patch: int, batch: int, n_scales: int, device: torch.device):
    """Batch through the real transform + nnU-Net's DS downsampling + split, like the trainer's data path."""
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    scales = [[1.0] * 3] + [[0.5**i] * 3 for i in range(1, n_scales)]
    pipeline = ComposeTransforms(
        [TopoTargetsTransform(("skeleton", "band"), ignore_label=2), DownsampleSegForDSTransform(scales)]
    )
    samples = [
        pipeline(image=None, segmentation=torch.from_numpy(synthetic_labels(patch, s))[None])["segmentation"]
        for s in range(batch)
    ]
    target = [torch.stack([s[i] for s in samples]).to(device) for i in range(n_scales)]
    labels, maps = split_topo_targets(target, ("skeleton", "band"))
    image = torch.randn(batch, 1, patch, patch, patch, device=device)
    return image, labels, maps


class SavedBytes:
    """Bytes of distinct storages autograd saves for backward inside the context (activation memory)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()

    def _pack(self, t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def clock(device: torch.device) -> float:
    """GPU: wall-clock after a synchronize. CPU: this process's CPU seconds (robust to other jobs on a shared
    machine; run with one torch thread so that no thread spins idle)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def timed(fn: Callable[[], None], device: torch.device) -> float:
    t0 = clock(device)
    fn()
    return clock(device) - t0


def measure(fn: Callable[[], None], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median time of ``fn`` (see :func:`clock`) and its memory (GPU: peak allocated above the start; CPU:
    autograd-saved bytes)."""
    fn()  # warm-up
    times = [timed(fn, device) for _ in range(repeats)]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        mem = torch.cuda.max_memory_allocated() - base
    else:
        with SavedBytes() as saved:
            fn()
        mem = saved.bytes
    return (statistics.median(times) if times else float("nan")), float(mem)


def measure_pair(a: Callable[[], None], b: Callable[[], None], device: torch.device, repeats: int):
    """Like :func:`measure` for two functions run alternately (a, b, a, b, ...), so that drifting machine load
    affects both alike; returns ``((time_a, mem_a), (time_b, mem_b))``."""
    a()
    b()
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for i, fn in enumerate((a, b)):
            times[i].append(timed(fn, device))
    mems = [measure(fn, device, 0)[1] for fn in (a, b)]
    return (statistics.median(times[0]), mems[0]), (statistics.median(times[1]), mems[1])


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def run(device: torch.device, patch: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = build_network(patch, device)
    n_scales = len(net.decoder.seg_layers)
    image, labels, maps = make_batch(patch, batch, n_scales, device)
    default = nnunet_default_loss(n_scales)

    with autocast(device), torch.no_grad():
        fixed = [o.detach() for o in net(image)]

    def step(loss_fn=None, extra=None):
        def go():
            net.zero_grad(set_to_none=True)
            with autocast(device):
                out = net(image)
                loss = sum(o.float().mean() for o in out) if loss_fn is None else loss_fn(out, labels, **(extra or {}))
            loss.backward()

        return go

    def loss_only(loss_fn, extra=None):
        def go():
            leaves = [f.clone().requires_grad_(True) for f in fixed]
            with autocast(device):
                loss = loss_fn(leaves, labels, **(extra or {}))
            loss.backward()

        return go

    results: dict[str, dict[str, float]] = {}
    t_net, m_net = measure(step(), device, repeats)
    results["network fwd+bwd"] = {"time_s": t_net, "mem_bytes": m_net}
    rows = [("nnU-Net default loss (DC+CE, DS)", default, None)]
    for name in TERM_NAMES:
        extra = {"skeleton": maps["skeleton"]} if name == "skeleton_recall" else None
        extra = {"band": maps["band"]} if name == "boundary" else extra
        rows.append((f"term {name}", TopologyLoss({name: 1.0}), extra))
    compound = TopologyLoss(FULL)
    rows.append(("compound (all 7 terms)", compound, dict(maps)))
    for label, fn, extra in rows:
        fn = fn.to(device)
        t, m = measure(loss_only(fn, extra), device, repeats)
        results[label] = {"time_s": t, "mem_bytes": m}
    (t_def, m_def), (t_cmp, m_cmp) = measure_pair(step(default), step(compound, dict(maps)), device, repeats)
    results["train step, nnU-Net default loss"] = {"time_s": t_def, "mem_bytes": m_def}
    results["train step, compound"] = {"time_s": t_cmp, "mem_bytes": m_cmp}
    return results


def time_transforms(patch: int, repeats: int) -> dict[str, float]:
    """Median seconds per sample of the CPU target maps (one thread, as in one DA worker)."""
    out = {}
    for across in (True, False):
        labels = [synthetic_labels(patch, seed, across_slices=across) for seed in range(repeats)]
        tag = "sheets across z-slices" if across else "sheets along z-slices"
        for name, fn in (("skeleton", compute_skeleton), ("band", compute_band)):
            times = []
            for lab in labels:
                t0 = time.process_time()
                fn(lab, 2)
                times.append(time.process_time() - t0)
            out[f"{name} ({tag})"] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--patch", type=int, default=None, help="cubic patch edge (default 64 CPU, 128 GPU)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3 CPU, 10 GPU)")
    parser.add_argument("--transform-patch", type=int, default=128, help="patch edge for the transform timing")
    parser.add_argument("--quick", action="store_true", help="patch 48³ on CPU, 2 repeats, transform patch 96")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs; default 1, see clock)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    gpu = device.type == "cuda"
    if not gpu:
        torch.set_num_threads(args.threads)
    patch = args.patch or (128 if gpu else (48 if args.quick else 64))
    repeats = args.repeats or (10 if gpu else (2 if args.quick else 3))
    t_patch = 96 if args.quick else args.transform_patch
    if patch % 16 or patch < 32:
        parser.error(f"--patch must be a multiple of 16 and >= 32, got {patch}")
    card = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()})"
    print(f"# loss_cost  {datetime.date.today()}  {card}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(
        f"# network: nnU-Net 3d_fullres PlainConvUNet, patch {patch}³, batch {args.batch}, "
        f"AMP {'fp16' if gpu else 'off'}"
    )
    results = run(device, patch, args.batch, repeats)
    net_t, net_m = results["network fwd+bwd"]["time_s"], results["network fwd+bwd"]["mem_bytes"]
    mem_label = "peak alloc MB" if gpu else "saved MB"
    print(f"# time: {'wall-clock' if gpu else 'CPU seconds of this process'}, median of {repeats}")
    print(f"{'':40s} {'time ms':>9s} {'× net':>7s} {mem_label:>13s} {'× net':>7s}")
    for label, r in results.items():
        print(
            f"{label:40s} {1000 * r['time_s']:9.1f} {r['time_s'] / net_t:7.3f} "
            f"{r['mem_bytes'] / 2**20:13.1f} {r['mem_bytes'] / net_m:7.3f}"
        )
    d = results["train step, nnU-Net default loss"]
    c = results["train step, compound"]
    print(
        f"compound vs nnU-Net default training step: time +{100 * (c['time_s'] / d['time_s'] - 1):.1f}%, "
        f"memory +{100 * (c['mem_bytes'] / d['mem_bytes'] - 1):.1f}%  (target <= 15% / 15%)"
    )
    torch.set_num_threads(1)
    transforms = time_transforms(t_patch, repeats=3)
    print(f"# CPU target transforms, {t_patch}³ patch, 1 thread, CPU ms per sample (target <= 150 ms each)")
    for label, t in transforms.items():
        print(f"{label:40s} {1000 * t:9.1f} ms")
    if args.json:
        payload = {"card": card, "patch": patch, "batch": args.batch, "losses": results, "transforms_s": transforms}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
