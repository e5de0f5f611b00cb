"""Cost of ``nnunetv2_topo predict`` (models fused in memory) vs nnU-Net's disk route, side by side.

Rows, each run as its own process on the same synthetic test volumes and untrained model folders (prediction cost
does not depend on the weights):

  nnUNetv2_predict, 1 model                      nnU-Net's own command (reference for the 1-model row)
  predict, 1 model                               this package, TTA mirror (nnU-Net's default)
  predict, 2 models                              fused in memory, TTA mirror
  predict, 2 models + rot90                      TTA mirror+rot90 (16 views)
  disk route, 2 models                           nnUNetv2_predict --save_probabilities per model + nnUNetv2_ensemble

Reported: wall time (whole command, incl. start-up), per case ((wall - start-up) / cases, where start-up is the
wall time of a process that only imports torch and nnU-Net's predictor), predict's own per-case time (its summary
line: reading, preprocessing, prediction, fusion, post-processing, writing), CPU seconds of all the command's
processes (less sensitive than wall time to other jobs on a shared machine), peak RSS of the largest process of the
command (getrusage of the children), bytes written (everything the command leaves on disk).

    python benchmarks/predict_cost.py                         # CPU: 2 cases of 96³, patch 64³, 4/8/16/32 features
    python benchmarks/predict_cost.py --size 128 --cases 1
    python benchmarks/predict_cost.py --device cuda --size 320 --cases 2 --default-network   # GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
DEFAULT_FEATURES = (32, 64, 128, 256, 320, 320)  # nnU-Net's 3d_fullres PlainConvUNet for these volumes
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr); sys.exit(rc)"
)


def _bytes(paths) -> int:
    return sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file())


def _own_per_case(log: str) -> float | None:
    match = re.search(r"\(([0-9.]+) s per case", log)
    return float(match.group(1)) if match else None


def _run(cmd, env, log: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB of the largest process, CPU seconds of all its processes) of one command."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, cmd)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}); see {log}")
    rss, cpu = proc.stderr.strip().splitlines()[-1].split()
    return wall, int(rss) / 1024, float(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96, help="cubic test volume edge (default 96)")
    ap.add_argument("--cases", type=int, default=2)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--features", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--default-network", action="store_true", help=f"features {DEFAULT_FEATURES}, patch 128")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--tta", default="mirror", choices=("mirror", "none"),
                    help="TTA of every row (none: nnU-Net's --disable_tta, no rot90 row); default mirror")  # fmt: skip
    ap.add_argument("--skip", nargs="*", default=[], help="row names to skip (e.g. 'disk route, 2 models')")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    if args.default_network:
        args.features, args.patch = list(DEFAULT_FEATURES), 128

    from nnunetv2_topo.nnunet_env import trainer_folder
    from nnunetv2_topo.synth.layout import write_kaggle_dataset
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    work = args.work or Path(tempfile.mkdtemp(prefix="predict_cost_"))
    work.mkdir(parents=True, exist_ok=True)
    shape = (args.size,) * 3
    write_kaggle_dataset(work / "kaggle", 1, shape, args.cases, seed=0, progress=False)
    kaggle = work / "kaggle" / "test_images"
    images_ts = work / "imagesTs"
    images_ts.mkdir(exist_ok=True)
    for p in sorted(kaggle.glob("*.tif")):
        (images_ts / f"{p.stem}_0000.tif").write_bytes(p.read_bytes())
        (images_ts / f"{p.stem}.json").write_text('{"spacing": [1, 1, 1]}')
    patch = (args.patch,) * 3
    models = [
        write_untrained_model_folder(
            work / f"results{i}", plans_name=f"nnUNetPlans_bench{i}", patch=patch, features=args.features, seed=i
        )  # fmt: skip
        for i in (0, 1)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env.update(nnUNet_results=str(work), nnUNet_raw=str(work), nnUNet_preprocessed=str(work),
               nnUNet_extTrainer=str(trainer_folder()), nnUNet_compile="false", OMP_WAIT_POLICY="PASSIVE")  # fmt: skip
    predict = [
        BIN / "nnunetv2_topo",
        "predict",
        "--input",
        kaggle,
        "--device",
        args.device,
        "--quiet",
        "--tta",
        args.tta,
    ]
    no_tta = ["--disable_tta"] if args.tta == "none" else []

    def nnunet(model: Path, out: Path, *extra: str) -> list:
        return [BIN / "nnUNetv2_predict_from_modelfolder", "-i", images_ts, "-o", out, "-m", model, "-f", "0",
                "-device", args.device, "-npp", "1", "-nps", "1", *no_tta, *extra]  # fmt: skip

    rows = []
    startup, _, startup_cpu = _run([sys.executable, "-c", "import torch, nnunetv2.inference.predict_from_raw_data"],
                                   env, work / "startup.log")  # fmt: skip

    def row(name: str, commands: list, outputs: list) -> None:
        if name in args.skip:
            return
        wall, peak, cpu, own = 0.0, 0.0, 0.0, None
        for k, cmd in enumerate(commands):
            log = work / f"{name.replace(' ', '_').replace(',', '')}_{k}.log"
            w, p, c = _run(cmd, env, log)
            wall, peak, cpu, own = wall + w, max(peak, p), cpu + c, _own_per_case(log.read_text())
        per_case = (wall - startup * len(commands)) / args.cases
        written = _bytes(outputs)
        rows.append({"row": name, "wall_s": wall, "per_case_s": per_case, "own_per_case_s": own, "cpu_s": cpu,
                     "peak_rss_mb": peak, "written_mb": written / 1e6})  # fmt: skip
        own_s = f"{own:7.1f} s" if own is not None else " " * 9
        print(f"{name:28s} {wall:7.1f} s {per_case:7.1f} s {own_s} {cpu:7.1f} s {peak:7.0f} MB "
              f"{written / 1e6:9.2f} MB", flush=True)  # fmt: skip

    print(f"{args.cases} case(s) of {args.size}³, patch {args.patch}³, features {args.features}, {args.device}, "
          f"TTA {args.tta}; "
          f"start-up {startup:.1f} s ({startup_cpu:.1f} CPU s) per process")  # fmt: skip
    print(f"{'row':28s} {'wall':>9s} {'per case':>9s} {'own/case':>9s} {'CPU':>9s} {'peak RSS':>10s} {'written':>12s}")
    row("nnUNetv2_predict, 1 model", [nnunet(models[0], work / "nn1")], [work / "nn1"])
    row("predict, 1 model", [[*predict, "--output", work / "p1", "--model", models[0]]], [work / "p1"])
    two = ["--model", models[0], "--model", models[1]]
    row("predict, 2 models", [[*predict, "--output", work / "p2", *two]], [work / "p2"])
    if args.tta == "mirror":
        row("predict, 2 models + rot90", [[*predict, "--output", work / "p2r", *two, "--tta", "mirror+rot90"]],
            [work / "p2r"])  # fmt: skip
    disk = [work / "d0", work / "d1", work / "ens"]
    row("disk route, 2 models",
        [nnunet(models[0], disk[0], "--save_probabilities"), nnunet(models[1], disk[1], "--save_probabilities"),
         [BIN / "nnUNetv2_ensemble", "-i", disk[0], disk[1], "-o", disk[2], "-np", "1"]], disk)  # fmt: skip
    by = {r["row"]: r for r in rows}
    if "disk route, 2 models" in by and "predict, 2 models" in by:
        d, p = by["disk route, 2 models"], by["predict, 2 models"]
        print(f"predict / disk route (2 models): wall {p['wall_s'] / d['wall_s']:.2f}x, "
              f"CPU {p['cpu_s'] / d['cpu_s']:.2f}x, written {p['written_mb'] / d['written_mb']:.4f}x")  # fmt: skip
    if args.json:
        meta = {k: str(v) for k, v in vars(args).items()}
        out = {"args": meta, "startup_s": startup, "startup_cpu_s": startup_cpu, "rows": rows}
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
