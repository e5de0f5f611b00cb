"""Re-export of the fusion rule, which lives in :mod:`nnunetv2_topo.postprocessing.fusion` (an algorithm: the
``postprocess.json`` format and ``tune`` need it without the inference workflow)."""

from nnunetv2_topo.postprocessing.fusion import *  # noqa: F403
from nnunetv2_topo.postprocessing.fusion import __all__  # noqa: F401
