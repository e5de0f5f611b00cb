"""``TopologyLoss``: the weighted sum of the terms, with nnU-Net's deep supervision.

- ``dice``, ``ce`` and ``focal`` are applied at every deep-supervision scale with nnU-Net's scale weights
  (``1/2^i``, lowest scale 0, normalised to sum 1), exactly like nnU-Net's ``DeepSupervisionWrapper``.
- ``boundary``, ``cldice``, ``skeleton_recall`` and ``connectivity`` are applied at full resolution only (weight
  1), by default: that is where their precomputed targets are exact and the soft skeleton is cheapest per
  information. With ``topology_at_all_scales=True`` they are applied at every scale with the scale weights; the
  skeleton/band of a lower scale are then recomputed from that scale's labels on the CPU (a nearest-downsampled
  skeleton is not the skeleton of the downsampled labels), unless given as per-scale lists.
- A term with weight 0 is never computed. Everything runs in fp32 with autocast disabled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from nnunetv2_topo.losses.boundary import BoundaryTerm
from nnunetv2_topo.losses.cldice import ClDiceTerm
from nnunetv2_topo.losses.connectivity import ConnectivityTerm
from nnunetv2_topo.losses.focal import FocalTerm
from nnunetv2_topo.losses.masking import FgParts, check_logits
from nnunetv2_topo.losses.overlap import CrossEntropyTerm, DiceTerm
from nnunetv2_topo.losses.skeleton_recall import SkeletonRecallTerm
from nnunetv2_topo.transforms.targets import check_band

TERM_NAMES = ("dice", "ce", "focal", "boundary", "cldice", "skeleton_recall", "connectivity")
"""Weight keys of :class:`TopologyLoss`, in the order the terms are computed and logged."""

SCALE_TERMS = frozenset({"dice", "ce", "focal"})
"""Terms applied at every deep-supervision scale."""

TOPOLOGY_TERMS = frozenset({"boundary", "cldice", "skeleton_recall", "connectivity"})
"""Terms applied at full resolution only unless ``topology_at_all_scales``."""

TARGET_OF_TERM = {"skeleton_recall": "skeleton", "boundary": "band"}
"""Precomputed target each term wants (see ``TopologyLoss.required_targets``)."""


def default_ds_weights(n_scales: int) -> tuple[float, ...]:
    """nnU-Net's deep-supervision weights: ``1/2^i``, the lowest scale 0, normalised to sum 1 (1 scale: ``(1,)``)."""
    if n_scales < 1:
        raise ValueError("deep supervision needs at least one scale")
    if n_scales == 1:
        return (1.0,)
    w = [1.0 / 2**i for i in range(n_scales)]
    w[-1] = 0.0
    total = sum(w)
    return tuple(x / total for x in w)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate term weights: known keys, finite numbers >= 0, not all 0. Missing keys mean 0."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping term -> weight, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(TERM_NAMES))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown} in weights; valid terms are {list(TERM_NAMES)}")
    out = {}
    for name in TERM_NAMES:
        value = weights.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weight of loss term {name!r} must be a finite number >= 0, got {value!r}")
        out[name] = float(value)
    if not any(out.values()):
        raise ValueError(f"all loss weights are 0; give at least one of {list(TERM_NAMES)} a weight > 0")
    return out


class TopologyLoss(nn.Module):
    """Weighted sum of Dice, CE, focal, boundary, clDice, skeleton recall and connectivity for 2-channel logits.

    ``loss = TopologyLoss({"dice": 1, "ce": 1, "skeleton_recall": 1})(logits, target, skeleton=None, band=None)``

    - ``logits``: ``(B, 2, Z, Y, X)`` (or 2-D) or a deep-supervision list of them, full resolution first.
    - ``target``: integer labels ``(B, 1, ...)`` (0 background, 1 foreground, ``ignore_label`` unlabeled) or the
      matching list.
    - ``skeleton`` / ``band``: precomputed full-resolution ``(B, 1, ...)`` targets
      (:func:`nnunetv2_topo.transforms.split_topo_targets`); None → computed on the fly on the CPU.

    Every term is >= 0 with minimum 0 for a perfect prediction (Dice is ``1 − Dice``, so ``dice + ce`` equals
    nnU-Net's default loss + 1). ``last_terms`` holds the unweighted values of the last call (DS terms: their
    scale-weighted sum) and ``"total"``. ``focal_alpha`` defaults to 0.25 (Lin et al.; the seed used 0.34).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        ignore_label: int | None = 2,
        ds_weights: Sequence[float] | None = None,
        topology_at_all_scales: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        cldice_iterations: int = 3,
        skeleton_tube: int = 0,
        boundary_band: tuple[float, float] = (3.0, 5.0),
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        self.weights = check_weights(weights)
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
            raise ValueError(f"ignore_label must be an int or None, got {ignore_label!r}")
        self.ignore_label = ignore_label
        self.ds_weights = None if ds_weights is None else self._check_ds_weights(ds_weights)
        self.topology_at_all_scales = bool(topology_at_all_scales)
        # every term is built (so invalid parameters raise even for unused terms), only weighted ones are run
        self.terms = nn.ModuleDict(
            {
                "dice": DiceTerm(ignore_label, batch_dice=batch_dice),
                "ce": CrossEntropyTerm(ignore_label),
                "focal": FocalTerm(ignore_label, alpha=focal_alpha, gamma=focal_gamma),
                "boundary": BoundaryTerm(ignore_label, band=check_band(boundary_band)),
                "cldice": ClDiceTerm(ignore_label, iterations=cldice_iterations),
                "skeleton_recall": SkeletonRecallTerm(ignore_label, tube=skeleton_tube),
                "connectivity": ConnectivityTerm(ignore_label),
            }
        )
        self.active = tuple(n for n in TERM_NAMES if self.weights[n] > 0)
        self.required_targets = frozenset(TARGET_OF_TERM[n] for n in self.active if n in TARGET_OF_TERM)
        self._last: dict[str, Tensor] = {}

    @staticmethod
    def _check_ds_weights(ds_weights: Sequence[float]) -> tuple[float, ...]:
        try:
            values = tuple(float(w) for w in ds_weights)
        except (TypeError, ValueError):
            raise ValueError(f"ds_weights must be a sequence of numbers, got {ds_weights!r}") from None
        if not values or any(not math.isfinite(w) or w < 0 for w in values) or not any(values):
            raise ValueError(f"ds_weights must be finite numbers >= 0, not all 0, got {list(ds_weights)!r}")
        return values

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted term values of the last call and ``"total"``, as floats (one device sync, on access)."""
        if not self._last:
            return {}
        values = torch.stack([v.float() for v in self._last.values()]).tolist()
        return dict(zip(self._last.keys(), values))

    def _scale_list(self, name: str, value, n_scales: int) -> list[Tensor | None]:
        if isinstance(value, (list, tuple)):
            if len(value) != n_scales:
                raise ValueError(f"{name} is a list of {len(value)} scales but the logits have {n_scales}")
            return list(value)
        return [value] + [None] * (n_scales - 1)

    def forward(
        self,
        logits: Tensor | Sequence[Tensor],
        target: Tensor | Sequence[Tensor],
        skeleton: Tensor | Sequence[Tensor] | None = None,
        band: Tensor | Sequence[Tensor] | None = None,
    ) -> Tensor:
        is_list = isinstance(logits, (list, tuple))
        if is_list != isinstance(target, (list, tuple)):
            raise ValueError("logits and target must both be tensors or both deep-supervision lists")
        logits_l = list(logits) if is_list else [logits]
        target_l = list(target) if is_list else [target]
        if not logits_l or len(logits_l) != len(target_l):
            raise ValueError(f"got {len(logits_l)} logit scales but {len(target_l)} target scales")
        for i, lg in enumerate(logits_l):
            check_logits(lg, f"logits[{i}]" if is_list else "logits")
        n = len(logits_l)
        ds_w = self.ds_weights if self.ds_weights is not None else default_ds_weights(n)
        if len(ds_w) != n:
            raise ValueError(f"ds_weights has {len(ds_w)} entries but the logits have {n} scales")
        skel_l = self._scale_list("skeleton", skeleton, n)
        band_l = self._scale_list("band", band, n)

        device = logits_l[0].device
        terms: dict[str, Tensor] = {}
        with torch.autocast(device_type=device.type, enabled=False):
            for i in range(n):
                do_scale = [t for t in self.active if t in SCALE_TERMS]
                do_topo = [t for t in self.active if t in TOPOLOGY_TERMS]
                scale_w = ds_w[i]
                if not self.topology_at_all_scales:
                    do_topo = do_topo if i == 0 else []
                    topo_w = 1.0
                else:
                    topo_w = scale_w
                if scale_w == 0:
                    do_scale = []
                if topo_w == 0:
                    do_topo = []
                if not do_scale and not do_topo:
                    continue
                parts = FgParts(logits_l[i], target_l[i], self.ignore_label)
                for name in do_scale + do_topo:
                    w = scale_w if name in SCALE_TERMS else topo_w
                    value = self.terms[name].compute(parts, skeleton=skel_l[i], band=band_l[i])
                    terms[name] = terms[name] + w * value if name in terms else w * value
        total = sum(self.weights[name] * value for name, value in terms.items())
        self._last = {name: v.detach() for name, v in terms.items()}
        self._last["total"] = total.detach()
        return total
