"""Moved to :mod:`nnunetv2_topo.testing.probability_maps` (test and benchmark support); this re-export is kept until
the branches that import it from here are merged."""

from nnunetv2_topo.testing.probability_maps import (  # noqa: F401
    CALIBRATIONS,
    FailureModes,
    simulate_probability,
    simulated_case,
)
