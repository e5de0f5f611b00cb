"""Moved to :mod:`nnunetv2_topo.testing.untrained` (test support); this re-export is kept until the branches that
import it from here are merged."""

from nnunetv2_topo.testing.untrained import write_untrained_model_folder

__all__ = ["write_untrained_model_folder"]
