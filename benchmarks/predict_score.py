"""Competition score of ``nnunetv2_topo predict`` on the demo's synthetic test cases: one model vs two models fused
vs two fused + rot90 TTA, all with the same post-processing (the default ``PostprocessConfig`` steps).

Needs a finished demo folder with both trained models (``nnunetv2_topo demo --work DIR``, without --no-baseline):

    python benchmarks/predict_score.py --demo-work demo_work
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-work", type=Path, required=True, help="folder of a finished `nnunetv2_topo demo`")
    ap.add_argument("--out", type=Path, help="where predictions and scores go (default: DEMO_WORK/predict_score)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()

    from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS
    from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file
    from nnunetv2_topo.postprocessing.steps import PostprocessConfig

    work = args.demo_work
    models = sorted(work.glob("nnUNet_results/Dataset*/*__*__3d_fullres"))
    topo = [m for m in models if m.name.startswith("nnUNetTrainerTopoWarmup__")]
    other = [m for m in models if m not in topo]
    if not topo or not other:
        raise SystemExit(f"{work}: needs the demo's two trained model folders, found {[m.name for m in models]}")
    out = args.out or work / "predict_score"
    out.mkdir(parents=True, exist_ok=True)
    config = out / "postprocess.json"
    save_postprocess_file(config, PostprocessFile(FusionSpec(), PostprocessConfig(), {}))
    kaggle = work / "kaggle"
    variants = [
        (f"1 model ({topo[0].name.split('__')[0]}), mirror", ["--model", topo[0]], "mirror"),
        (f"1 model ({other[0].name.split('__')[0]}), mirror", ["--model", other[0]], "mirror"),
        ("2 models fused (logit), mirror", ["--model", topo[0], "--model", other[0]], "mirror"),
        ("2 models fused, mirror+rot90", ["--model", topo[0], "--model", other[0]], "mirror+rot90"),
    ]
    rows = []
    for k, (name, model_args, tta) in enumerate(variants):
        pred = out / f"v{k}"
        cmd = [BIN / "nnunetv2_topo", "predict", "--input", kaggle / "test_images", "--output", pred, *model_args,
               "--tta", tta, "--config", config, "--device", args.device, "--quiet"]  # fmt: skip
        t = time.perf_counter()
        subprocess.run(list(map(str, cmd)), check=True)
        seconds = time.perf_counter() - t
        scores = out / f"v{k}.json"
        evaluate = [
            BIN / "nnunetv2_topo",
            "evaluate",
            "--input",
            pred,
            "--gt",
            kaggle / "test_labels",
            "--json",
            scores,
        ]
        subprocess.run(list(map(str, evaluate)), check=True, capture_output=True)
        mean = json.loads(scores.read_text())["mean"]
        rows.append({"variant": name, "seconds": seconds, **{m: mean[m] for m in SCORE_FIELDS}})
        r = rows[-1]
        print(f"{name:44s} {r['score']:.4f} {r['topo']:.4f} {r['surface_dice']:.4f} {r['voi_score']:.4f} "
              f"{seconds:6.1f} s", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
