"""``nnunetv2_topo kaggle-bundle``: trained models -> a folder for ``kaggle datasets create`` (offline notebook)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nnunetv2_topo.inference.predict import TTA_MODES
from nnunetv2_topo.kaggle.bundle import BundleRequest, build_bundle

HELP = "package trained models, wheels, submit.py and a notebook into a dataset folder for an offline Kaggle notebook"
DESCRIPTION = """\
Write a folder for `kaggle datasets create -p DIR`, with which a Kaggle notebook without internet installs this
project and writes submission.zip:

  wheels/               this project's wheel and every distribution it needs that the Kaggle image lacks, for
                        --python/--platform (resolved and downloaded with pip now; nothing is downloaded on Kaggle)
  kaggle-provided.txt   the packages assumed present in the image (default: Kaggle's current image; override with
                        the `pip freeze` of a Kaggle notebook via --kaggle-provided)
  models/               slim copies of the --model folders: the weights predict uses, plans.json, dataset.json,
                        dataset_fingerprint.json and the checkpoint fields nnU-Net's predictor reads
  postprocess.json      the --config (fusion weights, post-processing)
  submit.py             offline: runs `nnunetv2_topo predict` with the bundled models (Kaggle's paths by default)
  notebook/             submission.ipynb (cell 1: the offline install, cell 2: submit.py) + kernel-metadata.json
  dataset-metadata.json, README.md (the kaggle commands), kaggle-bundle.json (what submit.py runs)

Checked before anything is written: the model folders and folds, the config's fusion weights (one per --model),
the --kaggle-provided file; after the wheels are fetched: every bundled model loads with nnU-Net's predictor and
`pip install --dry-run --no-index --find-links wheels nnunetv2-topo` resolves against the image's packages. The
folder is built beside --output and renamed into place at the end: a failure leaves nothing.

Example:
  M=$nnUNet_results/Dataset100_Vesuvius/nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres
  nnunetv2_topo kaggle-bundle --model $M --folds 0 --config postprocess.json \\
      --kaggle-id jdoe/vesuvius-nnunet-bundle --output kaggle_bundle
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BundleRequest(models=(), output=Path())
    # every dest is a BundleRequest field: run() builds the request from them
    parser.add_argument("--model", dest="models", metavar="MODEL_DIR", type=Path, action="append", default=[],
                        required=True,
                        help="trained-model folder <trainer>__<plans>__<configuration> (repeatable)")  # fmt: skip
    parser.add_argument("--folds", nargs="+", help="folds to bundle, in every model (default: every fold with one)")
    parser.add_argument("--checkpoint", default=d.checkpoint, help="checkpoint file name (default %(default)s)")
    parser.add_argument("--config", type=Path, help="postprocess.json from tune: fusion weights and post-processing")
    parser.add_argument("--output", type=Path, required=True, help="bundle folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output")
    parser.add_argument("--kaggle-provided", dest="provided", type=Path, default=d.provided, metavar="FILE",
                        help="NAME==VERSION lines the image has (default: Kaggle's image, see its header)")  # fmt: skip
    parser.add_argument("--python", default=d.python, help="the image's Python MAJOR.MINOR (default %(default)s)")
    parser.add_argument("--platform", default=d.platform,
                        help="the image's wheel platform tag; manylinux tags accept older glibc too "
                             "(default %(default)s: Ubuntu 22.04)")  # fmt: skip
    parser.add_argument("--kaggle-id", default=d.kaggle_id, metavar="OWNER/SLUG",
                        help="the Kaggle dataset to create (default %(default)s: edit before uploading)")  # fmt: skip
    parser.add_argument("--tta", default=d.tta, choices=TTA_MODES, help="submit.py's default test-time "
                        "augmentation (default %(default)s)")  # fmt: skip
    parser.add_argument("--find-links", type=Path, action="append", default=[], metavar="DIR",
                        help="extra folder of wheels (e.g. built for the target from an sdist)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    request = BundleRequest(**{field.name: getattr(args, field.name) for field in dataclasses.fields(BundleRequest)})
    report = build_bundle(request)
    for line in report.lines():
        print(line)
    print(
        f"next: kaggle datasets create -p {args.output} --dir-mode zip; kaggle kernels push -p {args.output}/notebook"
    )
    return 0
