"""Cost of one competition-score round during training (``score_every_epochs``), from its measured pieces.

A round predicts ``score_num_cases`` validation cases with nnU-Net's sliding-window predictor **in the training
process** (the training loop waits for this part) and scores each segmentation with the exact metric in a background
process (the loop does not wait). This script measures, on the chosen device:

1. the sliding-window prediction of one case of ``--shape`` with nnU-Net's default 3d_fullres PlainConvUNet at
   ``--patch`` (tile step 0.5, Gaussian weighting, as the trainer's round): either the full volume (``--full``) or,
   where that is too slow (a CPU), one tile timed and multiplied by the number of tiles of ``--shape``;
   mirroring (``--mirroring``) multiplies the forward passes by 8;
2. the conversion of the logits to the segmentation in the original shape (nnU-Net's export function; CPU, in the
   training process);
3. optionally (``--metric``) ``leaderboard_score(pred, gt, workers=0)`` on a synthetic sheet pair of ``--shape``
   (wall and CPU time in this process; the background process does exactly this per case).

    python benchmarks/score_round.py --device cpu --threads 2            # per-tile estimate on the CPU
    python benchmarks/score_round.py --device cuda --full --mirroring    # GPU: the real sliding window at 320³
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time


def _network_and_predictor(patch: int, device, mirroring: bool):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json

    features, size = [32], patch
    while size // 2 >= 4 and len(features) < 6:
        size //= 2
        features.append(min(320, features[-1] * 2))
    plans = standalone_plans([patch] * 3, features, 2, dataset_name="Dataset998_Bench", plans_name="benchPlans")
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    dataset_json = vesuvius_dataset_json(1)
    network = nnUNetTrainer.build_network_architecture(manager, config, 1, 2, enable_deep_supervision=False)
    network = network.to(device)
    network.eval()
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=False,
    )  # fmt: skip
    predictor.manual_initialization(network, manager, config, None, dataset_json, "nnUNetTrainer", (0, 1, 2))
    params = sum(p.numel() for p in network.parameters())
    return predictor, params, features, torch


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_prediction(predictor, torch, device, shape: int, repeats: int) -> list[float]:
    volume = torch.randn((1, shape, shape, shape))
    times, cpu = [], []
    with torch.no_grad():
        predictor.predict_sliding_window_return_logits(volume)  # warm-up (cudnn autotune, allocator)
        for _ in range(repeats):
            _sync(torch, device)
            t0, c0 = time.perf_counter(), time.process_time()
            predictor.predict_sliding_window_return_logits(volume)
            _sync(torch, device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return times, cpu


def _convert_seconds(shape: int) -> tuple[float, float]:
    """Logits -> segmentation in the original shape (nnU-Net's export function, as the round calls it): the
    training process does this per case on the CPU."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json

    manager = PlansManager(standalone_plans([32] * 3, (4, 8, 16)))
    config = manager.get_configuration("3d_fullres")
    labels = manager.get_label_manager(vesuvius_dataset_json(1))
    size = (shape,) * 3
    props = {
        "spacing": [1.0, 1.0, 1.0], "shape_before_cropping": size, "bbox_used_for_cropping": [[0, shape]] * 3,
        "shape_after_cropping_and_before_resampling": size,
    }  # fmt: skip
    logits = torch.randn((2, *size))
    w0, c0 = time.perf_counter(), time.process_time()
    convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, manager, config, labels, props, num_threads_torch=torch.get_num_threads()
    )
    return time.perf_counter() - w0, time.process_time() - c0


def _metric_seconds(shape: int) -> tuple[float, float]:
    import numpy as np

    from nnunetv2_topo.metrics import leaderboard_score

    rng = np.random.default_rng(0)
    z = np.arange(shape)[:, None, None]
    y, x = np.meshgrid(np.arange(shape), np.arange(shape), indexing="ij")
    gt = np.zeros((shape,) * 3, dtype=np.uint8)
    for k in range(4):  # four wavy sheets
        surface = (k + 0.5) * shape / 4 + 4 * np.sin(y / 17 + k) + 3 * np.cos(x / 13)
        gt[np.abs(z - surface[None]) < 2.5] = 1
    pred = gt.copy()
    flip = rng.random(pred.shape) < 0.002
    pred[flip] = 1 - pred[flip]
    leaderboard_score(pred[:32, :32, :32], gt[:32, :32, :32], workers=0)  # kernels from the numba cache
    w0, c0 = time.perf_counter(), time.process_time()
    leaderboard_score(pred, gt, workers=0)
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--shape", type=int, default=320, help="cubic case size to estimate (default 320)")
    parser.add_argument("--cases", type=int, default=4, help="score_num_cases of the round to estimate")
    parser.add_argument("--full", action="store_true", help="predict the whole --shape volume (else one tile)")
    parser.add_argument("--mirroring", action="store_true", help="also time with mirroring (score_mirroring)")
    parser.add_argument("--metric", action="store_true", help="also time leaderboard_score on a --shape pair")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out: dict = {"args": vars(args)}
    tiles_per_axis = 1 + math.ceil((args.shape - args.patch) / (args.patch * 0.5))
    tiles = tiles_per_axis**3
    out["tiles_per_case"] = tiles
    for mirroring in [False, True] if args.mirroring else [False]:
        predictor, params, features, torch = _network_and_predictor(args.patch, device, mirroring)
        shape = args.shape if args.full else args.patch
        times, cpu = _time_prediction(predictor, torch, device, shape, args.repeats)
        scale = 1 if args.full else tiles
        per_case = statistics.median(times) * scale
        key = "mirroring" if mirroring else "plain"
        out[key] = {
            "measured_s": times, "measured_cpu_s": cpu, "shape_measured": shape, "predict_s_per_case": per_case,
            "predict_cpu_s_per_case": statistics.median(cpu) * scale,
        }  # fmt: skip
        print(
            f"{key:9s}: {'full ' + str(shape) + '³ volume' if args.full else 'one ' + str(shape) + '³ tile'} "
            f"{statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU (median of {len(times)}) -> "
            f"{per_case:.1f} s wall per {args.shape}³ case ({tiles} tiles), network {params / 1e6:.1f} M parameters "
            f"{features}, device {args.device}",
            flush=True,
        )
    wall, cpu = _convert_seconds(args.shape)
    out["convert"] = {"wall_s": wall, "cpu_s": cpu}
    print(f"convert  : logits -> segmentation at {args.shape}³ {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    if args.metric:
        wall, cpu = _metric_seconds(args.shape)
        out["metric"] = {"wall_s": wall, "cpu_s": cpu}
        print(f"metric   : leaderboard_score({args.shape}³, workers=0) {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    plain = out["plain"]["predict_s_per_case"] + out["convert"]["wall_s"]
    print(
        f"round of {args.cases} cases at {args.shape}³: training process waits ~{args.cases * plain:.0f} s "
        f"(prediction + conversion, mirroring off)"
        + (
            f", {args.cases * (out['mirroring']['predict_s_per_case'] + out['convert']['wall_s']):.0f} s with mirroring"
            if args.mirroring
            else ""
        )
        + (f"; background metric ~{args.cases * out['metric']['cpu_s']:.0f} s CPU" if args.metric else "")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
