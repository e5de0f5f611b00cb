"""``kaggle-bundle``: trained models -> a folder for an offline Kaggle notebook (wheels, slim models, submit.py)."""

from nnunetv2_topo.kaggle.bundle import BundleReport, BundleRequest, build_bundle
from nnunetv2_topo.kaggle.provided import DEFAULT_PROVIDED, BundleError, Provided, read_provided
from nnunetv2_topo.kaggle.wheels import Target

__all__ = [
    "DEFAULT_PROVIDED",
    "BundleError",
    "BundleReport",
    "BundleRequest",
    "Provided",
    "Target",
    "build_bundle",
    "read_provided",
]
