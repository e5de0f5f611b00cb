"""Moved to :mod:`nnunetv2_topo.evaluation.scoring`; this re-export is kept until the branches that import it from
here (the trainers) are merged."""

from nnunetv2_topo.evaluation.scoring import *  # noqa: F403
from nnunetv2_topo.evaluation.scoring import __all__  # noqa: F401
