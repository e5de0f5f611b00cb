"""End to end: synthetic Kaggle folder -> nnUNetv2_convert_vesuvius -> the real nnUNetv2_plan_and_preprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nnunetv2_topo.conversion.convert_vesuvius import main as convert_main
from nnunetv2_topo.synth.layout import write_kaggle_dataset


def _script(name: str) -> Path:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} not installed next to {sys.executable}")
    return path


@pytest.mark.slow
@pytest.mark.e2e
def test_plan_and_preprocess_accepts_converted_dataset(
    tmp_path: Path, nnunet_env: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    kaggle = tmp_path / "kaggle"
    write_kaggle_dataset(kaggle, cases=4, shape=(48, 48, 48), test_cases=1, seed=3, progress=False)
    assert convert_main(["--input", str(kaggle), "--dataset-id", "11", "--folds", "2", "-np", "1", "--quiet"]) == 0
    capsys.readouterr()
    ours = json.loads((nnunet_env.preprocessed / "Dataset011_Vesuvius" / "splits_final.json").read_text())

    proc = subprocess.run(
        [
            str(_script("nnUNetv2_plan_and_preprocess")),
            "-d",
            "11",
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-np",
            "1",
            "-npfp",
            "1",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),  # nnunet_env points nnUNet_raw/preprocessed/results at tmp folders
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "verify_dataset_integrity Done" in log
    assert "Tiff3DIO" in log
    assert "no spacing file found" not in log  # the sidecars are named the way Tiff3DIO looks for them
    pre = nnunet_env.preprocessed / "Dataset011_Vesuvius"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert json.loads((pre / "dataset.json").read_text())["labels"]["ignore"] == 2
    cases = sorted(p.name for p in (nnunet_env.raw / "Dataset011_Vesuvius" / "labelsTr").glob("*.tif"))
    assert sorted(p.name for p in (pre / "nnUNetPlans_3d_fullres").glob("*_seg.b2nd")) == [
        c.replace(".tif", "_seg.b2nd") for c in cases
    ]
    assert json.loads((pre / "splits_final.json").read_text()) == ours  # our split is the one nnU-Net will use
