"""Helpers for the predict tests: tiny untrained model folders (random weights: nnU-Net's predictor only needs
dataset.json, plans.json and fold_*/checkpoint_final.pth) and test folders in both input layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from nnunetv2_topo.io import read_volume, write_tiff


def nnunet_layout(kaggle_images: Path, out: Path, spacing_sidecar: bool = True) -> Path:
    """Copy Kaggle's ``test_images/<id>.tif`` to nnU-Net's ``imagesTs/<id>_0000.tif`` (+ ``<id>.json`` spacing)."""
    out.mkdir(parents=True)
    for p in sorted(kaggle_images.glob("*.tif")):
        cid = p.name[: -len(".tif")]
        shutil.copy(p, out / f"{cid}_0000.tif")
        if spacing_sidecar:
            (out / f"{cid}.json").write_text(json.dumps({"spacing": [1, 1, 1]}))
    return out


def with_zero_border(kaggle_images: Path, out: Path) -> Path:
    """A copy of the test images with zero slabs on three sides (nnU-Net crops them away and pads them back as
    background), so the un-cropping of the logits is exercised."""
    out.mkdir(parents=True)
    for p in sorted(kaggle_images.glob("*.tif")):
        image = read_volume(p).copy()
        image[:3] = 0
        image[:, :, -5:] = 0
        image[:, :2] = 0
        write_tiff(out / p.name, image.astype(np.uint8))
    return out
