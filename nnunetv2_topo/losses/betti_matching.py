"""Betti-matching loss (Stucki et al. 2024) on random sub-crops of the patch: the competition's own topology as a
loss term, computed with the engine ``topolosses`` ships (:class:`topolosses.losses.BettiMatchingLoss`)."""

from __future__ import annotations

import atexit
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts, batch_mean
from nnunetv2_topo.setting_checks import Param, at_least_one, integer

CROP = Param("betti_matching_crop", "crop", 32, "int >= 2", "edge of the random cube cropped from each sample of the "
             "patch for the betti_matching term (clipped to the patch); its CPU cost grows with the crop's voxels",
             integer, lambda v: at_least_one(v - 1))  # fmt: skip
EVERY = Param("betti_matching_every", "every", 1, "int >= 1", "compute the betti_matching term every N training "
              "steps (the trainer's iteration counter; the other steps skip it and log nothing for it)", integer,
              at_least_one)  # fmt: skip


RESULT_FIELDS = tuple(
    f"input{i}_{kind}_{end}_coordinates"
    for i in (1, 2)
    for kind in ("matched", "unmatched")
    for end in ("birth", "death")
)
"""The fields of the engine's ``BettiMatchingResult`` that topolosses' ``_single_betti_loss`` reads."""

_WORKER: Any = None


def match_crops(inputs1: list[np.ndarray], inputs2: list[np.ndarray]) -> list[dict[str, list[np.ndarray]]]:
    """The engine's Betti matching of each pair (it runs in the worker process): per pair, :data:`RESULT_FIELDS`
    as plain arrays (one per homology dimension)."""
    from topolosses.losses.betti_matching.src import betti_matching as engine

    results = engine.compute_matching(inputs1, inputs2, True, True)
    return [{f: [np.array(a, copy=True) for a in getattr(r, f)] for f in RESULT_FIELDS} for r in results]


def _worker() -> Any:
    """One spawned process per training process runs the engine: calling it in the process itself leaves oneDNN's
    multi-threaded CPU convolution backward spinning forever afterwards (torch 2.14, nnU-Net's default network on
    the CPU), and a process lets the matching run beside the other terms."""
    global _WORKER
    if _WORKER is None:
        _WORKER = ProcessPoolExecutor(1, mp_context=get_context("spawn"))

        atexit.register(_WORKER.shutdown)
    return _WORKER


def single_betti_loss(pred: Tensor, target: Tensor, result: dict[str, list[np.ndarray]]) -> Tensor:
    """topolosses' ``BettiMatchingLoss._single_betti_loss`` with its defaults (matched and unmatched weights 1, no
    bar-length threshold, unmatched bars pushed to the diagonal), restated here because importing topolosses' engine
    module into the training process is what breaks oneDNN (see :func:`_worker`): per homology dimension
    ``2·Σ‖matched_pred − matched_target‖² + Σ (birth − death)²`` over the unmatched bars of both, summed."""

    def values(x: Tensor, field: str, dim: int) -> Tensor:
        ends = []
        for end in ("birth", "death"):
            coords = np.asarray(result[field.format(end=end)][dim]).reshape(-1, x.ndim)
            idx = torch.as_tensor(coords, dtype=torch.long, device=x.device)
            ends.append(x[tuple(idx[:, j] for j in range(x.ndim))])
        return torch.stack(ends, dim=1)  # (K, 2)

    total = pred.new_zeros(())
    for dim in range(len(result["input1_matched_birth_coordinates"])):
        matched = values(pred, "input1_matched_{end}_coordinates", dim)
        matched_t = values(target, "input2_matched_{end}_coordinates", dim)
        unmatched = values(pred, "input1_unmatched_{end}_coordinates", dim)
        unmatched_t = values(target, "input2_unmatched_{end}_coordinates", dim)
        total = total + 2 * ((matched - matched_t) ** 2).sum()
        total = total + ((unmatched[:, 0] - unmatched[:, 1]) ** 2).sum()
        total = total + ((unmatched_t[:, 0] - unmatched_t[:, 1]) ** 2).sum()
    return total


class _Pending:
    """One call's crops, their matching under way in the worker process (waited for in ``compute``)."""

    def __init__(self, prob: Tensor, target: Tensor, counted: Tensor, future: Any) -> None:
        self.prob, self.target, self.counted, self.future = prob, target, counted, future


class BettiMatchingTerm(LossTerm):
    """Betti-matching loss of the foreground probability against the target, on one random cube per sample.

    Shapes: ``logits`` ``(B, 2, *spatial)``, ``target`` ``(B, 1, *spatial)`` (3-D or 2-D). Each sample gets one
    random crop of edge ``crop`` (clipped to the patch; the position is drawn from ``(seed, step)``, so a resumed
    run draws the same crops). On the crop, the probability ``p`` and the 0/1 target (both 0 at ignore voxels, whose
    logit gradient is therefore exactly 0) go through topolosses' superlevel filtration (``1 − p``); the value per
    sample is topolosses' ``_single_betti_loss`` (sum over homology dimensions of the squared distances of matched
    bars plus the squared lengths of unmatched bars; no Dice part). Reduction: mean over the samples whose crop has
    at least one annotated voxel (0 with no gradient when none has).

    Cost: the persistent homology runs on the CPU, in a worker process (``std::async`` over the samples there), so
    it is computed only when autograd is on (training; validation skips it) and only every ``every``-th step
    (``step``, set by the trainer; ``None`` = every call). A skipped call returns ``None`` and the compound loss
    leaves the term out of that step. :meth:`prepare` copies the crops to the host and hands them to the worker
    before the other terms are computed (their GPU kernels queued), so the matching runs beside them.
    """

    def __init__(
        self, ignore_label: int | None = IGNORE_LABEL, crop: int = CROP.default, every: int = EVERY.default,
        seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(ignore_label)
        self.crop = CROP.checked(crop)
        self.every = EVERY.checked(every)
        self.seed = int(seed)
        self.step: int | None = None
        """The training step (set by the trainer before the loss call); decides ``every`` and the crops."""
        self._pending: _Pending | None = None

    def set_step(self, step: int | None) -> None:
        self.step = step

    def active_now(self) -> bool:
        """Computed in this call: autograd on and ``step`` on the ``every`` grid."""
        return torch.is_grad_enabled() and (self.step is None or self.step % self.every == 0)

    def crop_slices(self, spatial: tuple[int, ...], batch: int) -> list[tuple[slice, ...]]:
        """One crop per sample, drawn from ``(seed, step)``."""
        rng = np.random.default_rng([self.seed, 0 if self.step is None else int(self.step)])
        edges = [min(self.crop, s) for s in spatial]
        out = []
        for _ in range(batch):
            origin = [int(rng.integers(0, s - e + 1)) for s, e in zip(spatial, edges)]
            out.append(tuple(slice(o, o + e) for o, e in zip(origin, edges)))
        return out

    def prepare(self, parts: FgParts, **maps: Tensor) -> None:
        """Crop and start the copy to the host (non-blocking from CUDA); :meth:`compute` finishes."""
        self._pending = None
        if not self.active_now():
            return
        b, spatial = parts.logit.shape[0], tuple(parts.logit.shape[2:])
        slices = self.crop_slices(spatial, b)
        prob = torch.stack([parts.prob_masked[i, 0][s] for i, s in enumerate(slices)])  # (B, *crop)
        target = torch.stack([parts.target[i, 0][s] for i, s in enumerate(slices)])
        counted = torch.stack([parts.valid[i, 0][s].any() for i, s in enumerate(slices)])
        # superlevel filtration, as topolosses does: the engine sees 1 - p and 1 - t (float64, C order)
        arrays = (1.0 - torch.stack([prob.detach(), target])).to("cpu", torch.float64).numpy()
        future = _worker().submit(match_crops, [np.ascontiguousarray(a) for a in arrays[0]],
                                  [np.ascontiguousarray(a) for a in arrays[1]])  # fmt: skip
        self._pending = _Pending(prob, target, counted, future)

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor | None:
        if self._pending is None:
            self.prepare(parts, **maps)
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        results = pending.future.result()
        values = torch.stack([
            single_betti_loss(1.0 - pending.prob[i], 1.0 - pending.target[i], result)
            for i, result in enumerate(results)
        ])  # fmt: skip
        return batch_mean(values.to(parts.logit.dtype), pending.counted)


SPEC = TermSpec("betti_matching", BettiMatchingTerm, params=(CROP, EVERY))
