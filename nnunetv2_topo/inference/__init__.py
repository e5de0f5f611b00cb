"""Probability inputs (:mod:`.probabilities`: ``read_probability``, ``paired_cases``, ``fuse_probability_files``) and
live prediction with nnU-Net's predictor (:mod:`.predict`, :mod:`.models`, :mod:`.cases`); the fusion rule itself is
:mod:`nnunetv2_topo.postprocessing.fusion`."""

from nnunetv2_topo.inference.probabilities import (
    ProbabilityError,
    fuse_probability_files,
    index_cases,
    model_folds,
    paired_cases,
    read_probability,
)

__all__ = [
    "ProbabilityError",
    "fuse_probability_files",
    "index_cases",
    "model_folds",
    "paired_cases",
    "read_probability",
]
