"""Carry the topology targets through nnU-Net's data pipeline as extra ``segmentation`` channels.

nnU-Net's data loader keeps only ``image`` and ``segmentation`` from the transforms, so the skeleton and the
boundary band travel as extra channels appended to the segmentation by :class:`TopoTargetsTransform` (in the
data-augmentation workers, on the CPU, at full resolution, after the spatial augmentation). nnU-Net's
``DownsampleSegForDSTransform`` then carries them to every deep-supervision scale (nearest-exact), and
:func:`split_topo_targets` splits them off again in the training step before any loss sees the labels.

The segmentation stays an integer tensor (``int16`` in nnU-Net), so the channels are encoded as integers:
skeleton 0/1, band ``round(weight * BAND_SCALE)`` with ``BAND_SCALE = 100`` (weights in steps of 0.01).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

from nnunetv2_topo.transforms.targets import check_band, compute_band, compute_skeleton

TARGET_ORDER = ("skeleton", "band")
"""Fixed order of the appended channels (only the requested ones are appended)."""

BAND_SCALE = 100
"""Band weights are stored in the integer segmentation as ``round(weight * BAND_SCALE)``."""


def check_target_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate target names and return them in the fixed channel order (skeleton before band)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = sorted(set(names) - set(TARGET_ORDER))
    if unknown:
        raise ValueError(f"unknown topology target(s) {unknown}; valid names are {list(TARGET_ORDER)}")
    if len(set(names)) != len(names):
        raise ValueError(f"topology targets must not repeat, got {names}")
    return tuple(n for n in TARGET_ORDER if n in names)


class TopoTargetsTransform(SegOnlyTransform):
    """Append the requested topology targets as channels of one sample's ``segmentation`` ``(C, Z, Y, X)``.

    Computed from channel 0 (the labels) at full resolution: ``"skeleton"`` is the per-z-slice medial surface
    (:func:`~nnunetv2_topo.transforms.targets.compute_skeleton`), ``"band"`` the boundary-band weight
    (:func:`~nnunetv2_topo.transforms.targets.compute_band`) encoded as ``round(w * 100)``. Channels are appended
    in the order skeleton, band. Insert it just before nnU-Net's ``DownsampleSegForDSTransform``.
    """

    def __init__(
        self,
        targets: Iterable[str],
        ignore_label: int | None = 2,
        skeleton_tube: int = 0,
        boundary_band: tuple[float, float] = (3.0, 5.0),
    ) -> None:
        super().__init__()
        self.targets = check_target_names(targets)
        if not self.targets:
            raise ValueError("TopoTargetsTransform needs at least one of 'skeleton', 'band'")
        if int(skeleton_tube) != skeleton_tube or skeleton_tube < 0:
            raise ValueError(f"skeleton_tube must be an integer >= 0, got {skeleton_tube!r}")
        self.ignore_label = ignore_label
        self.skeleton_tube = int(skeleton_tube)
        self.boundary_band = check_band(boundary_band)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        labels = segmentation[0].numpy()
        channels = []
        for name in self.targets:
            if name == "skeleton":
                channels.append(compute_skeleton(labels, self.ignore_label, self.skeleton_tube))
            else:
                channels.append(encode_band(compute_band(labels, self.ignore_label, self.boundary_band)))
        extra = torch.from_numpy(np.stack(channels)).to(segmentation.dtype)
        return torch.cat((segmentation, extra), dim=0)


def encode_band(weight: np.ndarray) -> np.ndarray:
    """Band weight in [0, 1] → ``int16`` ``round(weight * BAND_SCALE)``."""
    return np.rint(np.asarray(weight, dtype=np.float32) * BAND_SCALE).astype(np.int16)


def decode_band(encoded: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_band` on a tensor: float weights in [0, 1]."""
    return encoded.float().div_(BAND_SCALE).clamp_(0.0, 1.0)


def split_topo_targets(
    target: torch.Tensor | Sequence[torch.Tensor], names: Sequence[str]
) -> tuple[torch.Tensor | list[torch.Tensor], dict[str, torch.Tensor]]:
    """Split the channels appended by :class:`TopoTargetsTransform` off the (batched) target.

    ``target`` is ``(B, 1 + k, ...)`` or a deep-supervision list of such tensors (full resolution first);
    ``names`` are the targets the transform was built with (any order; the channels are in the fixed order).
    Returns the labels in the same structure with channel 0 only, and ``{name: float tensor (B, 1, ...)}`` at full
    resolution: the skeleton as 0/1, the band decoded to weights in [0, 1].
    """
    ordered = check_target_names(names)
    k = len(ordered)
    is_list = isinstance(target, (list, tuple))
    scales = list(target) if is_list else [target]
    if not scales:
        raise ValueError("split_topo_targets: empty deep-supervision target list")
    for i, t in enumerate(scales):
        if t.ndim < 3 or t.shape[1] < 1 + k:
            raise ValueError(
                f"split_topo_targets: target{f'[{i}]' if is_list else ''} has shape {tuple(t.shape)}, expected "
                f"(B, {1 + k}, ...) = labels + {list(ordered)}; was TopoTargetsTransform built with the same targets?"
            )
    labels = [t[:, :1] for t in scales]
    full = scales[0]
    first = full.shape[1] - k  # the extra channels are the last k, whatever came before them
    extras: dict[str, torch.Tensor] = {}
    for j, name in enumerate(ordered):
        channel = full[:, first + j : first + j + 1]
        extras[name] = decode_band(channel) if name == "band" else channel.float()
    return (labels if is_list else labels[0]), extras


def compute_batch_target(
    labels: torch.Tensor,
    name: str,
    ignore_label: int | None = 2,
    skeleton_tube: int = 0,
    boundary_band: tuple[float, float] = (3.0, 5.0),
) -> torch.Tensor:
    """On-the-fly fallback: the ``name`` target ("skeleton" or "band") of a batch of labels ``(B, 1, ...)``,
    computed sample by sample on the CPU and returned as float ``(B, 1, ...)`` on the labels' device.
    Correct but slow (it synchronises with the GPU and runs in the training step); prefer the transform."""
    (name,) = check_target_names([name])
    if labels.ndim < 3 or labels.shape[1] != 1:
        raise ValueError(f"compute_batch_target: labels must be (B, 1, ...), got {tuple(labels.shape)}")
    host = labels.detach().to("cpu").numpy()
    out = np.empty(host.shape, dtype=np.float32)
    for b in range(host.shape[0]):
        if name == "skeleton":
            out[b, 0] = compute_skeleton(host[b, 0], ignore_label, skeleton_tube)
        else:
            out[b, 0] = compute_band(host[b, 0], ignore_label, boundary_band)
    return torch.from_numpy(out).to(labels.device)
