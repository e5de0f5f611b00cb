"""nnunetv2-topo: topology-aware nnU-Net v2 trainers, losses, metric and tooling for thin-sheet segmentation
of the Vesuvius Challenge scroll CT scans."""

__version__ = "0.1.0"

IGNORE_LABEL = 2
"""Label value of unlabeled voxels in the Vesuvius data (``dataset.json``: ``"ignore": 2``)."""

LABELS = {"background": 0, "surface": 1, "ignore": IGNORE_LABEL}
"""The ``labels`` of a Vesuvius ``dataset.json`` (nnU-Net wants the ignore label named "ignore" and highest)."""
