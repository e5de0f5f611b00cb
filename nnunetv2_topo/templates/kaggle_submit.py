"""Write the Kaggle submission with the models of this bundle, offline (``submit.py`` of an nnunetv2_topo bundle).

Run in the notebook after the offline install (``pip install --no-index --find-links <bundle>/wheels nnunetv2-topo``):

    python <bundle>/submit.py            # Kaggle's test_images/ and test.csv -> /kaggle/working/submission.zip

It sets nnU-Net's environment (the TopoWarmup trainers' folder in ``nnUNet_extTrainer``, ``nnUNet_compile=f``) and
runs ``nnunetv2_topo predict`` (the same code, imported) with the bundled models, folds, checkpoint and
``postprocess.json`` that ``kaggle-bundle`` recorded in ``kaggle-bundle.json``. ``predict`` shows each case's time
and the ETA, and says at the end which cases it predicted without TTA to stay within ``--time-budget-hours``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
COMPETITION = Path("/kaggle/input/vesuvius-challenge-surface-detection")
KAGGLE_LIMIT_HOURS = 9.0
DEFAULT_BUDGET_HOURS = 8.0  # leaves an hour of the 9 h limit for the install, model loading and the zip


def parse_args(argv: list[str] | None, manifest: dict) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="submit.py",
        description="Predict the test volumes with this bundle's models and write submission.zip (offline).",
    )
    p.add_argument("--input", type=Path, default=COMPETITION / "test_images", help="test volumes (default %(default)s)")
    p.add_argument("--csv", type=Path, default=COMPETITION / "test.csv", help="test ids (default %(default)s)")
    p.add_argument("--output", type=Path, default=Path("/kaggle/working/submission.zip"), help="(default %(default)s)")
    p.add_argument(
        "--time-budget-hours",
        type=float,
        default=DEFAULT_BUDGET_HOURS,
        help=f"past it, the remaining cases are predicted without TTA (default %(default)s; Kaggle's limit is "
        f"{KAGGLE_LIMIT_HOURS:g} h)",
    )
    # package imports stay inside the functions: nnU-Net (imported with them) must see main()'s environment
    from nnunetv2_topo.inference.predict import TTA_MODES

    p.add_argument("--tta", default=manifest.get("tta", "mirror"), choices=TTA_MODES, help="(default %(default)s)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    return p.parse_args(argv)


def predict_argv(args: argparse.Namespace, manifest: dict) -> list[str]:
    """The ``nnunetv2_topo predict`` command line for this bundle."""
    argv = ["predict", "--input", str(args.input), "--output", str(args.output), "--overwrite"]
    for model in manifest["models"]:
        argv += ["--model", str(BUNDLE / model["path"])]
    if manifest.get("folds"):
        argv += ["--folds", *manifest["folds"]]
    argv += ["--checkpoint", manifest["checkpoint"], "--tta", args.tta]
    if manifest.get("config"):
        argv += ["--config", str(BUNDLE / manifest["config"])]
    if args.csv is not None and str(args.csv) != "":
        argv += ["--csv", str(args.csv)]
    if args.device:
        argv += ["--device", args.device]
    return argv + ["--time-budget-hours", str(args.time_budget_hours), "--log-cases"]


def main(argv: list[str] | None = None) -> int:
    manifest = json.loads((BUNDLE / "kaggle-bundle.json").read_text())
    args = parse_args(argv, manifest)
    # nnU-Net's environment: no torch.compile (slow to start, fragile offline), the trainers found by name, and the
    # three folder variables set (predict does not use them; nnU-Net warns when they are missing)
    os.environ["nnUNet_compile"] = "f"  # noqa: SIM112  (nnU-Net's own spelling)
    scratch = Path(tempfile.gettempdir()) / "nnunet_unused"
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(name, str(scratch / name))
    # imported only now: nnU-Net reads these variables when it is first imported
    from nnunetv2_topo.nnunet_env import EXT_TRAINER_ENV_VAR as ENV_VAR
    from nnunetv2_topo.nnunet_env import ext_trainer_env

    os.environ[ENV_VAR] = ext_trainer_env()[ENV_VAR]
    try:  # nnU-Net's trainer search hides import errors behind "trainer class not found": show the cause first
        import nnunetv2_topo.trainers  # noqa: F401
    except Exception as exc:
        print(f"submit.py: warning: the TopoWarmup trainers do not import here ({type(exc).__name__}: {exc}); "
              "models trained with them will not load", file=sys.stderr, flush=True)  # fmt: skip
    from nnunetv2_topo.cli.main import main as run_nnunetv2_topo

    command = predict_argv(args, manifest)
    print("submit.py: nnunetv2_topo " + " ".join(command), flush=True)
    start = time.monotonic()
    code = run_nnunetv2_topo(command)
    print(f"submit.py: finished with status {code} after {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
