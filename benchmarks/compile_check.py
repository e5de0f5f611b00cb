"""The compiled path on a GPU at the real data size (320³), with nnU-Net's default ``torch.compile`` on.

nnU-Net compiles the network by default on CUDA; every CPU test runs with compile off. This runs, in one go:

1. ``nnunetv2_topo synth`` 2 training cases (1 trains, 1 validates) + 1 test case of 320³,
   ``nnUNetv2_convert_vesuvius``, ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (nnU-Net's default network and
   patch for that size);
2. ``nnUNetv2_train -tr nnUNetTrainerTopoWarmup`` with ``nnUNet_compile=true``, EMA on and a competition-score
   round every epoch (2 short epochs);
3. checks: no ``_orig_mod.`` key in ``checkpoint_final.pth`` / ``checkpoint_best_score.pth`` (network, raw and
   EMA weights); ``nnUNetv2_predict -chk checkpoint_best_score.pth`` writes a 0/1 volume of the test case's shape;
   ``nnUNetv2_export_model_to_zip`` holds both checkpoints; ``nnUNetv2_train --val --npz`` with
   ``nnUNet_topo_config`` unset writes the ``.npz`` and says whether it validated the EMA weights;
4. the step time with compile on (``benchmarks/step_time.py --compile``, nnUNetTrainer vs TopoWarmup), last.

    python benchmarks/compile_check.py --work /tmp/compile_check --json out.json   # GPU, <= --budget seconds

The steps run in that order (the most important first) within ``--budget`` seconds (default 560, for a 10-minute
device call): each gets at most its own timeout and what is left of the budget; a step that no longer fits is
recorded as skipped. ``--c`` under compile is covered by the CPU test (tests/test_presets_e2e.py). The JSON records
each check, its time and the tail of a failing command's output. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import yaml

BIN = Path(sys.executable).parent
TRAINER = "nnUNetTrainerTopoWarmup"
CONFIG = {
    "num_epochs": 2, "num_iterations_per_epoch": 10, "num_val_iterations_per_epoch": 2, "warmup_epochs": 1,
    "ema_decay": 0.99, "score_every_epochs": 1, "score_num_cases": 1,
}  # fmt: skip


class Checks:
    """Runs commands within a total time budget and records every check."""

    def __init__(self, budget: float, timeout_scale: float = 1.0) -> None:
        self.records: list[dict] = []
        self.deadline = time.monotonic() + budget
        self.timeout_scale = timeout_scale

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list, env: dict, timeout: int, least: int = 30) -> subprocess.CompletedProcess | None:
        """Run ``cmd`` with ``min(timeout, budget left)``; skipped (a failed check) when less than ``least`` s are
        left."""
        limit = int(min(timeout * self.timeout_scale, self.left()))
        if limit < least:
            self.add(name, False, 0.0, f"skipped: {max(limit, 0)} s of the budget left, needs >= {least} s")
            return None
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            self.add(name, False, time.perf_counter() - t0, f"timed out after {limit} s")
            return None
        ok = proc.returncode == 0
        self.add(name, ok, time.perf_counter() - t0, "" if ok else (proc.stdout + proc.stderr)[-3000:])
        return proc if ok else None

    def add(self, name: str, ok: bool, seconds: float = 0.0, detail: str = "") -> bool:
        self.records.append({"check": name, "ok": bool(ok), "seconds": round(seconds, 1), "detail": detail})
        print(f"[{'ok' if ok else 'FAILED'}] {name} ({seconds:.0f} s) {detail[-600:] if not ok else detail}")
        return ok


def _compile_prefixed(path: Path) -> list[str]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    keys = list(ckpt["network_weights"]) + list(ckpt.get("raw_network_weights") or {})
    ema = (ckpt.get("topo_state") or {}).get("weight_ema") or {}
    keys += list(ema.get("averaged") or {})
    return [k for k in keys if "_orig_mod." in k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work folder (emptied first)")
    parser.add_argument("--size", type=int, default=320, help="case edge in voxels (default 320, the real data)")
    parser.add_argument("--json", type=Path, help="write the checks here")
    parser.add_argument("--budget", type=float, default=560, help="seconds for everything (default 560)")
    parser.add_argument("--skip-step-time", action="store_true")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of this script")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every step's timeout (CPU smoke)")
    args = parser.parse_args(argv)

    from nnunetv2_topo.io import read_volume
    from nnunetv2_topo.nnunet_env import nnunet_env

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    cfg_file = args.work / "topo_config.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    env = nnunet_env(args.work, data_workers=6, processes=4, topo_config=cfg_file)
    env["nnUNet_compile"] = "true"  # nnU-Net's default on CUDA, said explicitly
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (args.work / name).mkdir()
    checks = Checks(args.budget, args.timeout_scale)
    size = [str(args.size)] * 3
    kaggle = args.work / "kaggle"
    steps = [
        ("synth", [BIN / "nnunetv2_topo", "synth", "--output", kaggle, "--cases", "2", "--shape", *size,
                   "--test-cases", "1", "-np", "4", "--quiet"], 90),
        ("convert", [BIN / "nnUNetv2_convert_vesuvius", "--input", kaggle, "--dataset-id", "1", "--folds", "2",
                     "--quiet"], 40),
        ("plan_and_preprocess", [BIN / "nnUNetv2_plan_and_preprocess", "-d", "1", "-c", "3d_fullres", "-np", "4"],
         120),
    ]  # fmt: skip
    for name, cmd, timeout in steps:
        if checks.run(name, cmd, env, timeout) is None:
            return _finish(checks, args.json)
    pre = args.work / "nnUNet_preprocessed" / "Dataset001_Vesuvius"
    cases = sorted(p.name[: -len(".tif")] for p in (pre / "gt_segmentations").glob("*.tif"))
    (pre / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]))
    train = [BIN / "nnUNetv2_train", "1", "3d_fullres", "0", "-tr", TRAINER, "-device", args.device]
    first = checks.run("train with compile (2 epochs, EMA, score rounds)", train, env, 300, least=120)
    if first is None:
        return _finish(checks, args.json)
    checks.add("nnU-Net compiled the network", "Using torch.compile..." in first.stdout)  # the trainer's message
    fold = args.work / "nnUNet_results" / "Dataset001_Vesuvius" / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"
    log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
    epoch_times = [float(line.split("Epoch time:")[1].split()[0]) for line in log.splitlines() if "Epoch time:" in line]
    checks.add("epoch times (s)", bool(epoch_times), detail=str(epoch_times))
    for name in ("checkpoint_final.pth", "checkpoint_best_score.pth"):
        bad = _compile_prefixed(fold / name) if (fold / name).is_file() else ["(file missing)"]
        checks.add(f"{name}: no _orig_mod. keys", not bad, detail=", ".join(bad[:3]))

    test_images = args.work / "nnUNet_raw" / "Dataset001_Vesuvius" / "imagesTs"
    out = args.work / "pred_best_score"
    predict = [BIN / "nnUNetv2_predict", "-i", test_images, "-o", out, "-d", "1", "-c", "3d_fullres", "-tr", TRAINER,
               "-f", "0", "-chk", "checkpoint_best_score.pth", "--disable_tta", "-device", args.device]  # fmt: skip
    if checks.run("nnUNetv2_predict -chk checkpoint_best_score.pth (compile on)", predict, env, 150, 60) is not None:
        image = next(test_images.glob("*_0000.tif"))
        pred = read_volume(out / image.name.replace("_0000.tif", ".tif"))
        checks.add("prediction shape and labels", pred.shape == read_volume(image).shape
                   and set(np.unique(pred)) <= {0, 1}, detail=str(pred.shape))  # fmt: skip
    unset = {k: v for k, v in env.items() if k != "nnUNet_topo_config"}
    val = checks.run("--val --npz with nnUNet_topo_config unset", [*train, "--val", "--npz"], unset, 150, 60)
    if val is not None:
        checks.add("--val wrote the .npz", any((fold / "validation").glob("*.npz")))
        checks.add("--val validated the EMA weights", "Validating the EMA weights" in val.stdout)

    zip_file = args.work / "model.zip"
    export = [BIN / "nnUNetv2_export_model_to_zip", "-d", "1", "-o", zip_file, "-c", "3d_fullres", "-tr", TRAINER,
              "-f", "0", "-chk", "checkpoint_final.pth", "checkpoint_best_score.pth"]  # fmt: skip
    if checks.run("nnUNetv2_export_model_to_zip", export, env, 60, 10) is not None:
        names = zipfile.ZipFile(zip_file).namelist()
        checks.add("zip holds both checkpoints", all(any(n.endswith(f"fold_0/{c}") for n in names)
                   for c in ("checkpoint_final.pth", "checkpoint_best_score.pth")))  # fmt: skip
    if not args.skip_step_time:
        step = checks.run(
            "step time with compile (step_time.py --compile)",
            [sys.executable, Path(__file__).parent / "step_time.py", "--device", "cuda", "--patch", "128", "--compile",
             "--trainers", "nnUNetTrainer", TRAINER, "--iterations", "10", "--warmup", "3",
             "--json", args.work / "step_time_compile.json"],
            env, 200, 90,
        )  # fmt: skip
        if step is not None:
            print(step.stdout[-2500:])
    return _finish(checks, args.json)


def _finish(checks: Checks, json_out: Path | None) -> int:
    failed = [r["check"] for r in checks.records if not r["ok"]]
    print(f"\n{len(checks.records) - len(failed)}/{len(checks.records)} checks passed" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps(checks.records, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
