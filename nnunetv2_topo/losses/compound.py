"""``TopologyLoss``: the weighted sum of the registered terms (:mod:`~nnunetv2_topo.losses.registry`), with
nnU-Net's deep supervision.

- Terms declared ``every_scale`` (``dice``, ``ce``, ``focal``) are applied at every deep-supervision scale with
  nnU-Net's scale weights (``1/2^i``, lowest scale 0, normalised to sum 1), exactly like nnU-Net's
  ``DeepSupervisionWrapper``.
- The others (``boundary``, ``cldice``, ``skeleton_recall``, ``dilated_mse``) are applied at full resolution only
  (weight 1), by default: that is where their precomputed targets are exact and the soft skeleton is cheapest per
  information. With ``topology_at_all_scales=True`` they are applied at every scale with the scale weights; the
  skeleton/band of a lower scale are then recomputed from that scale's labels on the CPU (a nearest-downsampled
  skeleton is not the skeleton of the downsampled labels), unless given as per-scale lists.
- A term with weight 0 is never computed. Everything runs in fp32 with autocast disabled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm
from nnunetv2_topo.losses.masking import FgParts, check_logits
from nnunetv2_topo.losses.registry import TERMS, check_weights, term_params
from nnunetv2_topo.transforms.topo_targets import TARGETS


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


class TermValues(Mapping[str, float]):
    """One call's term values, kept as a device tensor and read to floats on first access (one host-device
    synchronisation then; :meth:`read_all` reads many records with one)."""

    def __init__(self, names: tuple[str, ...], values: Tensor | None) -> None:
        self.names = names
        self.on_device = values  # (not ``values``: that is Mapping.values())
        self._floats: dict[str, float] | None = None if names else {}

    def _host(self) -> dict[str, float]:
        if self._floats is None:
            assert self.on_device is not None, "a record with names has their values"
            self._floats = dict(zip(self.names, self.on_device.tolist()))
        return self._floats

    def __getitem__(self, name: str) -> float:
        return self._host()[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def read_all(records: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
        """``records`` with every unread :class:`TermValues` read, all in one transfer per device."""
        by_device: dict[torch.device, list[tuple[TermValues, Tensor]]] = {}
        for r in records:
            if isinstance(r, TermValues) and r._floats is None and r.on_device is not None:
                by_device.setdefault(r.on_device.device, []).append((r, r.on_device))
        for group in by_device.values():
            flat = torch.cat([values.reshape(-1) for _, values in group]).tolist()
            start = 0
            for rec, _ in group:
                rec._floats = dict(zip(rec.names, flat[start : start + len(rec.names)]))
                start += len(rec.names)
        return list(records)


class TopologyLoss(nn.Module):
    """Weighted sum of the registered terms (Dice, CE, focal, boundary, clDice, skeleton recall, connectivity) for
    2-channel logits.

    ``loss = TopologyLoss({"dice": 1, "ce": 1, "skeleton_recall": 1})(logits, target, skeleton=None, band=None)``

    - ``weights``: term name -> weight (unlisted = 0); ``**params``: the terms' parameters by configuration key
      (``focal_alpha=0.3``, ``boundary_band=(2, 4)``; each term declares its own, with default and checks).

    - ``logits``: ``(B, 2, Z, Y, X)`` (or 2-D) or a deep-supervision list of them, full resolution first.
    - ``target``: integer labels ``(B, 1, ...)`` (0 background, 1 foreground, ``ignore_label`` unlabeled) or the
      matching list.
    - ``**maps``: precomputed full-resolution ``(B, 1, ...)`` targets by name (``skeleton``, ``band``:
      :func:`nnunetv2_topo.transforms.split_topo_targets`) or per-scale lists; missing or None → computed on the
      fly on the CPU.

    Returns a scalar. Reductions: Dice and CE are nnU-Net's (per-sample Dice unless ``batch_dice``; CE over the
    batch's annotated voxels); the per-sample terms (focal, boundary, clDice, skeleton recall, connectivity) are
    averaged over the samples they are defined for (:class:`~nnunetv2_topo.losses.base.LossTerm`), so a patch that
    is entirely ignore does not count as 0.

    Every term is >= 0 with minimum 0 for a perfect prediction (Dice is ``1 − Dice``, so ``dice + ce`` equals
    nnU-Net's default loss + 1). ``last_terms`` holds the unweighted values of the last call (DS terms: their
    scale-weighted sum) and ``"total"``. ``focal_alpha`` defaults to 0.25 (Lin et al.; the original five-term
    recipe used 0.34).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        ignore_label: int | None = IGNORE_LABEL,
        ds_weights: Sequence[float] | None = None,
        topology_at_all_scales: bool = False,
        batch_dice: bool = False,
        **params: Any,
    ) -> None:
        super().__init__()
        self.weights = check_weights(weights)
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
            raise ValueError(f"ignore_label must be an int or None, got {ignore_label!r}")
        self.ignore_label = ignore_label
        self.ds_weights = None if ds_weights is None else self._check_ds_weights(ds_weights)
        self.topology_at_all_scales = bool(topology_at_all_scales)
        declared = term_params()
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise ValueError(f"unknown loss parameter(s) {unknown}; the parameters are {', '.join(declared)}")
        self.params = {key: param.checked(params.get(key, param.default)) for key, (param, _) in declared.items()}
        """Every term parameter by key, checked, defaults filled in."""
        run_options = {"batch_dice": bool(batch_dice)}
        # every term is built (so invalid parameters raise even for unused terms), only weighted ones are run
        self.terms = nn.ModuleDict(
            {
                name: spec.term(
                    ignore_label,
                    **{p.arg: self.params[p.key] for p in spec.all_params},
                    **{option: run_options[option] for option in spec.run_options},
                )
                for name, spec in TERMS.items()
            }
        )
        self.active = tuple(n for n in TERMS if n in self.weights)
        self.required_targets = tuple(t for t in TARGETS if any(TERMS[n].target == t for n in self.active))
        """Precomputed targets the weighted terms read, in channel order (:data:`~nnunetv2_topo.transforms.TARGETS`)."""
        self.target_params = {p.key: self.params[p.key] for t in self.required_targets for p in TARGETS[t].params}
        """Parameters of :attr:`required_targets` by key (for ``TopoTargetsTransform``)."""
        self._last: dict[str, Tensor] = {}
        self.schedule_factors: dict[str, float] = {}
        """Per-term factors of :meth:`set_schedule` (missing = 1)."""

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
        return dict(self.last_term_values)

    @property
    def last_term_values(self) -> TermValues:
        """:attr:`last_terms` still on the device: no host-device synchronisation until a value is read."""
        if not self._last:
            return TermValues((), None)
        return TermValues(tuple(self._last), torch.stack([v.float() for v in self._last.values()]))

    def _scale_list(self, name: str, value, n_scales: int) -> list[Tensor | None]:
        if isinstance(value, (list, tuple)):
            if len(value) != n_scales:
                raise ValueError(f"{name} is a list of {len(value)} scales but the logits have {n_scales}")
            return list(value)
        return [value] + [None] * (n_scales - 1)

    def forward(
        self,
        logits: Tensor | list[Tensor] | tuple[Tensor, ...],
        target: Tensor | list[Tensor] | tuple[Tensor, ...],
        **maps: Tensor | list[Tensor] | tuple[Tensor, ...] | None,
    ) -> Tensor:
        is_list = isinstance(logits, (list, tuple))
        if is_list != isinstance(target, (list, tuple)):
            raise ValueError("logits and target must both be tensors or both deep-supervision lists")
        logits_l = list(logits) if isinstance(logits, (list, tuple)) else [logits]
        target_l = list(target) if isinstance(target, (list, tuple)) else [target]
        if not logits_l or len(logits_l) != len(target_l):
            raise ValueError(f"got {len(logits_l)} logit scales but {len(target_l)} target scales")
        for i, lg in enumerate(logits_l):
            check_logits(lg, f"logits[{i}]" if is_list else "logits")
        unknown = sorted(set(maps) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown precomputed target(s) {unknown}; the targets are {', '.join(TARGETS)}")
        n = len(logits_l)
        ds_w = self.ds_weights if self.ds_weights is not None else default_ds_weights(n)
        if len(ds_w) != n:
            raise ValueError(f"ds_weights has {len(ds_w)} entries but the logits have {n} scales")
        maps_l = {name: self._scale_list(name, value, n) for name, value in maps.items()}

        device = logits_l[0].device
        weights = self.effective_weights()
        terms: dict[str, Tensor] = {}
        with torch.autocast(device_type=device.type, enabled=False):
            for i in range(n):
                scaled = ((name, self._scale_weight(name, i, ds_w[i])) for name in self.active if weights[name] > 0)
                run = [(name, w) for name, w in scaled if w != 0]
                if not run:
                    continue
                parts = FgParts(logits_l[i], target_l[i], self.ignore_label)
                scale_maps = {k: m for k, v in maps_l.items() if (m := v[i]) is not None}  # None: the term computes it
                for name, _ in run:  # e.g. start a host copy before the other terms' kernels are queued
                    self._term(name).prepare(parts, **scale_maps)
                for name, w in run:
                    value = self._term(name).compute(parts, **scale_maps)
                    if value is None:  # the term skips this call (betti_matching off its step grid)
                        continue
                    terms[name] = terms[name] + w * value if name in terms else w * value
        if not terms:
            first = logits_l[0]
            terms_total = (first * 0).sum()  # every weighted term skipped this call: 0 with a (zero) gradient
            self._last = {"total": terms_total.detach()}
            return terms_total
        total = cast(Tensor, sum(weights[name] * value for name, value in terms.items()))  # (terms: not empty)
        self._last = {name: v.detach() for name, v in terms.items()}
        self._last["total"] = total.detach()
        return total

    def set_schedule(self, factors: Mapping[str, float] | None) -> None:
        """Multiply the weight of each term in ``factors`` by its factor in [0, 1] (a loss-weight schedule; a
        term at 0 is not computed at all). ``None`` restores the configured weights."""
        if factors is None:
            self.schedule_factors = {}
            return
        unknown = sorted(set(factors) - set(self.active))
        if unknown:
            raise ValueError(f"schedule names term(s) {unknown} without a weight; weighted terms: {list(self.active)}")
        for name, f in factors.items():
            if not 0.0 <= float(f) <= 1.0:
                raise ValueError(f"schedule factor of {name!r} must lie in [0, 1], got {f!r}")
        self.schedule_factors = {name: float(f) for name, f in factors.items()}

    def effective_weights(self) -> dict[str, float]:
        """The weight of every weighted term in the next call: ``weights`` times its schedule factor."""
        return {name: w * self.schedule_factors.get(name, 1.0) for name, w in self.weights.items()}

    def set_step(self, step: int | None) -> None:
        """The training step, for terms that act on a step grid or draw from it (``betti_matching``)."""
        for name in self.terms:
            self._term(name).set_step(step)

    def _term(self, name: str) -> LossTerm:
        return cast(LossTerm, self.terms[name])  # (nn.ModuleDict is not generic: it holds the LossTerms built above)

    def _scale_weight(self, name: str, scale: int, scale_w: float) -> float:
        """Weight of term ``name`` at deep-supervision ``scale``: the scale weight for terms applied at every scale,
        else 1 at full resolution and 0 below (or the scale weight with ``topology_at_all_scales``)."""
        if TERMS[name].every_scale or self.topology_at_all_scales:
            return scale_w
        return 1.0 if scale == 0 else 0.0
