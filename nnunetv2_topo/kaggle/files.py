"""The small files of a bundle: the notebook, Kaggle's metadata files and the README with the upload commands."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nnunetv2_topo.kaggle.provided import BundleError

__all__ = ["COMPETITION_SLUG", "check_kaggle_id", "notebook", "write_kaggle_files"]

COMPETITION_SLUG = "vesuvius-challenge-surface-detection"
MANIFEST = "kaggle-bundle.json"
DEFAULT_KAGGLE_ID = "your-kaggle-username/nnunetv2-topo-bundle"


def check_kaggle_id(value: str) -> tuple[str, str]:
    """``owner/slug`` of the Kaggle dataset (the slug is the folder name under ``/kaggle/input``)."""
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_-]*)/([a-z0-9][a-z0-9-]{5,49})", value)
    if not m:
        raise BundleError(
            f"--kaggle-id {value!r}: expected OWNER/SLUG with a slug of 6-50 lowercase letters, digits and '-', "
            "e.g. jdoe/vesuvius-nnunet-bundle"
        )
    return m.group(1), m.group(2)


def _cell(source: str, kind: str, cell_id: str) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_type": kind,
        "id": cell_id,
        "metadata": {},
        "source": source.strip("\n").splitlines(keepends=True),
    }
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook(slug: str) -> dict:
    """Cell 1: the offline install from the attached dataset; cell 2: ``submit.py``."""
    install = f"""
# Offline install of nnunetv2-topo, nnU-Net and what the Kaggle image lacks, from the attached dataset
BUNDLE = "/kaggle/input/{slug}"
import glob, os
if not os.path.isfile(f"{{BUNDLE}}/{MANIFEST}"):  # attached under another path: find it
    BUNDLE = os.path.dirname(sorted(glob.glob("/kaggle/input/**/{MANIFEST}", recursive=True))[0])
!pip install --no-index --find-links {{BUNDLE}}/wheels nnunetv2-topo
"""
    submit = """
# Predict the test volumes with the bundled models -> /kaggle/working/submission.zip
# (options: --time-budget-hours H, --tta none|mirror|mirror+rot90, --device cpu; see --help)
!python {BUNDLE}/submit.py
"""
    return {
        "cells": [
            _cell("# Vesuvius surface detection: offline submission with nnunetv2-topo", "markdown", "title"),
            _cell(install, "code", "install"),
            _cell(submit, "code", "submit"),
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _readme(owner: str, slug: str, summary: str) -> str:
    return f"""# nnunetv2-topo bundle for an offline Kaggle notebook

Written by `nnunetv2_topo kaggle-bundle`. {summary}

| path | what |
|---|---|
| `wheels/` | nnunetv2-topo and every distribution it needs that the Kaggle image lacks |
| `kaggle-provided.txt` | the packages the bundle assumes the image already has |
| `models/` | slim copies of the model folders (prediction weights, plans, dataset.json, fingerprint) |
| `postprocess.json` | fusion weights and post-processing steps (when one was given) |
| `submit.py` | offline prediction -> `/kaggle/working/submission.zip` |
| `{MANIFEST}` | what submit.py runs: models, folds, checkpoint, config |
| `notebook/` | the notebook and its `kernel-metadata.json` |

## Upload and submit

```bash
pip install kaggle                      # API token in ~/.kaggle/kaggle.json
kaggle datasets create -p THIS_FOLDER --dir-mode zip        # first upload ({owner}/{slug}, private)
kaggle datasets version -p THIS_FOLDER --dir-mode zip -m "new models"   # later uploads
kaggle kernels push -p THIS_FOLDER/notebook                  # the notebook, internet off, this dataset attached
```

Then open the notebook on Kaggle, run it once ("Save Version"), and submit that version to the competition.
The dataset id `{owner}/{slug}` is in `dataset-metadata.json` and `notebook/kernel-metadata.json`; change both (or
rebuild with `--kaggle-id`) to upload under another account.

Try it locally first: in a fresh environment holding only `kaggle-provided.txt`,

```bash
pip install --no-index --find-links THIS_FOLDER/wheels nnunetv2-topo
python THIS_FOLDER/submit.py --input test_images --csv test.csv --output submission.zip
```
"""


def write_kaggle_files(staging: Path, owner: str, slug: str, summary: str) -> None:
    """``dataset-metadata.json``, ``README.md`` and ``notebook/`` (the notebook and ``kernel-metadata.json``)."""
    dataset_id = f"{owner}/{slug}"
    (staging / "dataset-metadata.json").write_text(
        json.dumps({"title": slug.replace("-", " ")[:50], "id": dataset_id, "licenses": [{"name": "other"}]}, indent=2)
        + "\n"
    )
    (staging / "README.md").write_text(_readme(owner, slug, summary))
    nb = staging / "notebook"
    nb.mkdir()
    (nb / "submission.ipynb").write_text(json.dumps(notebook(slug), indent=1) + "\n")
    kernel = {
        "id": f"{owner}/{slug}-submission",
        "title": f"{slug} submission",
        "code_file": "submission.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": [dataset_id],
        "competition_sources": [COMPETITION_SLUG],
        "kernel_sources": [],
        "model_sources": [],
    }
    (nb / "kernel-metadata.json").write_text(json.dumps(kernel, indent=2) + "\n")
