"""``kaggle-bundle`` end to end, as on Kaggle: a fresh venv holding only the "image" (torch, numpy, scipy, ... at this
machine's versions; its ``pip freeze`` is the ``--kaggle-provided`` file), the offline install from the bundle's
wheels with no index and no pip configuration, then ``submit.py`` writes a valid submission.zip.

Slow: installing torch into a fresh venv takes minutes. Run with ``-s`` to see the timings."""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.inference.untrained import write_untrained_model_folder
from nnunetv2_topo.io import read_volume
from nnunetv2_topo.submission import read_test_ids

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# what the test "image" holds: the project's inference dependencies that Kaggle's image has too
IMAGE = ("torch", "numpy", "scipy", "scikit-image", "pandas", "matplotlib", "tqdm", "pyyaml", "tifffile", "requests",
         "scikit-learn", "seaborn", "nibabel", "einops", "blosc2", "graphviz", "imageio", "pillow", "networkx",
         "numba", "llvmlite", "packaging")  # fmt: skip


def _pins() -> list[str]:
    """The image's packages at this machine's versions (torch with its CUDA libraries: a CPU build of torch would
    not match the CUDA build of torchvision that timm pulls in, and the trainers would not import)."""
    out = []
    for name in IMAGE:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def _env(offline: bool = False) -> dict[str, str]:
    """The environment of the fresh venv's processes: no PYTHONPATH (the installed wheel, not this checkout, must
    run), no nnUNet_* variable; offline: no pip configuration either (no find-links, no index of this machine)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("nnUNet")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if offline:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    return env


def _run(cmd: list, env: dict, cwd: Path, timeout: int) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(list(map(str, cmd)), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr, time.monotonic() - t0


def test_bundle_installs_offline_and_submits(kaggle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    timings: dict[str, float] = {}
    model = write_untrained_model_folder(tmp_path / "results" / "Dataset999_Predict", trainer="nnUNetTrainerTopoWarmup",
                                         folds=(0,), patch=(16, 16, 16))  # fmt: skip
    config = tmp_path / "postprocess.json"
    config.write_text(json.dumps({"version": 1, "fusion": {"mode": "logit", "weights": [1.0]}}))
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    try:
        # the "image": a fresh venv with the pinned set installed as usual; its pip freeze is what it provides
        _, timings["python -m venv"] = _run([sys.executable, "-m", "venv", venv], _env(), tmp_path, 300)
        _, timings["install the image (fresh venv)"] = _run([py, "-m", "pip", "install", "-q", *_pins()], _env(),
                                                            tmp_path, 1500)  # fmt: skip
        freeze, _ = _run([py, "-m", "pip", "list", "--format=freeze"], _env(), tmp_path, 120)
        provided = tmp_path / "provided.txt"
        provided.write_text("\n".join(ln for ln in freeze.splitlines() if "==" in ln) + "\n")

        glibc = platform.libc_ver()[1].split(".")
        target = ["--python", f"{sys.version_info[0]}.{sys.version_info[1]}",
                  "--platform", f"manylinux_{glibc[0]}_{glibc[1]}_{platform.machine()}"]  # fmt: skip
        bundle = tmp_path / "bundle"
        t0 = time.monotonic()
        assert main(["kaggle-bundle", "--model", str(model), "--config", str(config), "--output", str(bundle),
                     "--kaggle-provided", str(provided), "--kaggle-id", "tester/vesuvius-test-bundle",
                     *target]) == 0  # fmt: skip
        timings["kaggle-bundle"] = time.monotonic() - t0
        manifest = json.loads((bundle / "kaggle-bundle.json").read_text())
        assert manifest["config"] == "postprocess.json" and len(manifest["models"]) == 1
        assert sorted(manifest["wheels"]) == sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
        assert any(w.startswith("nnunetv2_topo-") for w in manifest["wheels"])
        assert any(w.startswith("nnunetv2-") for w in manifest["wheels"])
        assert not any(w.startswith("torch-") for w in manifest["wheels"]), "torch is in the image"
        kernel = json.loads((bundle / "notebook" / "kernel-metadata.json").read_text())
        assert kernel["enable_internet"] is False and kernel["dataset_sources"] == ["tester/vesuvius-test-bundle"]

        # the notebook's cell 1: offline, only the bundle's wheels
        _, timings["offline install"] = _run(
            [py, "-m", "pip", "install", "--no-index", "--find-links", bundle / "wheels", "nnunetv2-topo"],
            _env(offline=True), tmp_path, 900,
        )  # fmt: skip
        where, _ = _run([py, "-c", "import nnunetv2_topo; print(nnunetv2_topo.__file__)"], _env(), tmp_path, 120)
        assert str(venv) in where, f"nnunetv2_topo imported from {where}, not from the fresh venv"

        # the notebook's cell 2
        out = tmp_path / "submission.zip"
        log, timings["submit.py (2 cases)"] = _run(
            [py, bundle / "submit.py", "--input", kaggle_dir / "test_images", "--csv", kaggle_dir / "test.csv",
             "--output", out, "--device", "cpu", "--time-budget-hours", "1"], _env(), tmp_path, 900,
        )  # fmt: skip
        assert "submit.py: nnunetv2_topo predict" in log and "predicted 2 case(s)" in log, log[-2000:]
        print("\n" + next(ln for ln in log.splitlines() if ln.startswith("predicted ")))
        ids = read_test_ids(kaggle_dir / "test.csv")
        with zipfile.ZipFile(out) as zf:
            assert sorted(zf.namelist()) == sorted(f"{i}.tif" for i in ids)
            for cid in ids:
                mask = tifffile.imread(io.BytesIO(zf.read(f"{cid}.tif")))
                assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
                assert mask.shape == read_volume(kaggle_dir / "test_images" / f"{cid}.tif").shape
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # gigabytes of torch
        print("\nkaggle-bundle e2e timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
