"""Carry the topology targets through nnU-Net's data pipeline as extra ``segmentation`` channels.

nnU-Net's data loader keeps only ``image`` and ``segmentation`` from the transforms, so the skeleton and the
boundary band travel as extra channels appended to the segmentation by :class:`TopoTargetsTransform` (in the
data-augmentation workers, on the CPU, after the spatial augmentation). The loss reads them at full resolution
only (a nearest-downsampled skeleton is not the skeleton of the downsampled labels), so the transform runs *after*
nnU-Net's ``DownsampleSegForDSTransform`` and appends them to the full-resolution entry alone: the lower
deep-supervision scales carry only the labels (nothing is downsampled to be thrown away).
:func:`split_topo_targets` splits them off again in the training step before any loss sees the labels.

The segmentation stays an integer tensor (``int16`` in nnU-Net), so the channels are encoded as integers:
skeleton 0/1, band ``round(weight * BAND_SCALE)`` with ``BAND_SCALE = 100`` (weights in steps of 0.01).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.setting_checks import Param
from nnunetv2_topo.transforms.targets import BOUNDARY_BAND, SKELETON_TUBE, compute_band, compute_skeleton

BAND_SCALE = 100
"""Band weights are stored in the integer segmentation as ``round(weight * BAND_SCALE)``."""


@dataclass(frozen=True)
class TargetSpec:
    """A per-voxel target computed from one sample's labels in the data-augmentation workers.

    ``compute(labels, ignore_label, **{param.arg: value})`` gives the float map of one sample (no batch axis);
    ``encode`` turns it into the integer channel carried in the segmentation, ``decode`` turns that channel back
    into float weights (a tensor)."""

    name: str
    compute: Callable[..., np.ndarray]
    params: tuple[Param, ...] = ()
    encode: Callable[[np.ndarray], np.ndarray] = np.asarray
    decode: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.float


def encode_band(weight: np.ndarray) -> np.ndarray:
    """Band weight in [0, 1] → ``int16`` ``round(weight * BAND_SCALE)``."""
    return np.rint(np.asarray(weight, dtype=np.float32) * BAND_SCALE).astype(np.int16)


def decode_band(encoded: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_band` on a tensor: float weights in [0, 1]."""
    return encoded.float().div_(BAND_SCALE).clamp_(0.0, 1.0)


TARGETS: dict[str, TargetSpec] = {
    "skeleton": TargetSpec("skeleton", compute_skeleton, (SKELETON_TUBE,)),
    "band": TargetSpec("band", compute_band, (BOUNDARY_BAND,), encode_band, decode_band),
}
"""The precomputed targets, in the fixed order of the appended channels (only the requested ones are appended).
A loss term names the one it needs (:class:`nnunetv2_topo.losses.base.TermSpec`)."""

TARGET_ORDER = tuple(TARGETS)
"""Names of the built-in targets, in channel order."""


def check_target_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate target names and return them in the fixed channel order (the order of :data:`TARGETS`)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown topology target(s) {unknown}; valid names are {list(TARGETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"topology targets must not repeat, got {names}")
    return tuple(n for n in TARGETS if n in names)


def target_arguments(names: Iterable[str], params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{target: {compute argument: checked value}}`` for ``names`` from ``params`` keyed by parameter key
    (``skeleton_tube``, ``boundary_band``); a missing parameter takes its default, an unknown key is an error."""
    names = check_target_names(names)
    known = {p.key: p for spec in TARGETS.values() for p in spec.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown target parameter(s) {unknown}; valid ones are {sorted(known)}")
    return {name: {p.arg: p.checked(params.get(p.key, p.default)) for p in TARGETS[name].params} for name in names}


class TopoTargetsTransform(SegOnlyTransform):
    """Append the requested topology targets as channels of one sample's full-resolution ``segmentation``.

    ``segmentation`` is ``(C, Z, Y, X)`` or, after nnU-Net's ``DownsampleSegForDSTransform``, the list of its
    deep-supervision scales (full resolution first): the channels are appended to the full-resolution entry only.
    Computed from channel 0 (the labels): ``"skeleton"`` is the per-z-slice medial surface
    (:func:`~nnunetv2_topo.transforms.targets.compute_skeleton`), ``"band"`` the boundary-band weight
    (:func:`~nnunetv2_topo.transforms.targets.compute_band`) encoded as ``round(w * 100)``. Channels are appended
    in the order of :data:`TARGETS`. ``params``: the targets' parameters by key (``skeleton_tube=1``,
    ``boundary_band=(2, 4)``). Insert it just after nnU-Net's ``DownsampleSegForDSTransform`` (or last).
    """

    def __init__(self, targets: Iterable[str], ignore_label: int | None = IGNORE_LABEL, **params: Any) -> None:
        super().__init__()
        self.targets = check_target_names(targets)
        if not self.targets:
            raise ValueError(f"TopoTargetsTransform needs at least one of {list(TARGETS)}")
        self.ignore_label = ignore_label
        self.arguments = target_arguments(self.targets, params)

    def _apply_to_segmentation(
        self, segmentation: torch.Tensor | list[torch.Tensor], **params
    ) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(segmentation, (list, tuple)):
            if not segmentation:
                raise ValueError("TopoTargetsTransform: empty deep-supervision segmentation list")
            return [self._append(segmentation[0]), *segmentation[1:]]
        return self._append(segmentation)

    def _append(self, segmentation: torch.Tensor) -> torch.Tensor:
        labels = segmentation[0].numpy()
        channels = []
        for name in self.targets:
            spec = TARGETS[name]
            channels.append(spec.encode(spec.compute(labels, self.ignore_label, **self.arguments[name])))
        extra = torch.from_numpy(np.stack(channels)).to(segmentation.dtype)
        return torch.cat((segmentation, extra), dim=0)


def split_topo_targets(
    target: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...], names: Sequence[str]
) -> tuple[torch.Tensor | list[torch.Tensor], dict[str, torch.Tensor]]:
    """Split the channels appended by :class:`TopoTargetsTransform` off the (batched) target.

    ``target`` is ``(B, 1 + k, ...)`` or a deep-supervision list (full resolution first) whose first entry is
    ``(B, 1 + k, ...)``; the lower scales may carry the labels only (the transform placed after
    ``DownsampleSegForDSTransform``) or the downsampled channels too (placed before it; they are dropped).
    ``names`` are the targets the transform was built with (any order; the channels are in the fixed order).
    Returns the labels in the same structure with channel 0 only, and ``{name: float tensor (B, 1, ...)}`` at full
    resolution: the skeleton as 0/1, the band decoded to weights in [0, 1].
    """
    ordered = check_target_names(names)
    k = len(ordered)
    is_list = isinstance(target, (list, tuple))
    scales = list(target) if isinstance(target, (list, tuple)) else [target]
    if not scales:
        raise ValueError("split_topo_targets: empty deep-supervision target list")
    for i, t in enumerate(scales):
        if t.ndim < 3 or t.shape[1] < (1 + k if i == 0 else 1):
            raise ValueError(
                f"split_topo_targets: target{f'[{i}]' if is_list else ''} has shape {tuple(t.shape)}, expected "
                f"(B, {1 + k if i == 0 else 1}, ...) = labels{f' + {list(ordered)}' if i == 0 else ''}; was "
                "TopoTargetsTransform built with the same targets?"
            )
    labels = [t[:, :1] for t in scales]
    full = scales[0]
    first = full.shape[1] - k  # the extra channels are the last k, whatever came before them
    extras: dict[str, torch.Tensor] = {}
    for j, name in enumerate(ordered):
        channel = full[:, first + j : first + j + 1]
        extras[name] = TARGETS[name].decode(channel)
    return (labels if is_list else labels[0]), extras


def compute_batch_target(
    labels: torch.Tensor, name: str, ignore_label: int | None = IGNORE_LABEL, **params: Any
) -> torch.Tensor:
    """On-the-fly fallback: the ``name`` target (e.g. "skeleton" or "band") of a batch of labels ``(B, 1, ...)``,
    computed sample by sample on the CPU and returned as float ``(B, 1, ...)`` on the labels' device; ``params``
    as for :class:`TopoTargetsTransform`. Correct but slow (it synchronises with the GPU and runs in the training
    step); prefer the transform."""
    (name,) = check_target_names([name])
    arguments = target_arguments([name], params)[name]
    if labels.ndim < 3 or labels.shape[1] != 1:
        raise ValueError(f"compute_batch_target: labels must be (B, 1, ...), got {tuple(labels.shape)}")
    host = labels.detach().to("cpu").numpy()
    out = np.empty(host.shape, dtype=np.float32)
    for b in range(host.shape[0]):
        out[b, 0] = TARGETS[name].compute(host[b, 0], ignore_label, **arguments)
    return torch.from_numpy(out).to(labels.device)
