"""Betti-matching loss (Stucki et al. 2024) on random sub-crops of the patch: the competition's own topology as a
loss term, computed with the engine ``topolosses`` ships (:class:`topolosses.losses.BettiMatchingLoss`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from nnunetv2_topo import IGNORE_LABEL
from nnunetv2_topo.losses.base import LossTerm, TermSpec
from nnunetv2_topo.losses.masking import FgParts, batch_mean
from nnunetv2_topo.values import Param, at_least_one, integer

CROP = Param("betti_matching_crop", "crop", 32, "int >= 2", "edge of the random cube cropped from each sample of the "
             "patch for the betti_matching term (clipped to the patch); its CPU cost grows with the crop's voxels",
             integer, lambda v: at_least_one(v - 1))  # fmt: skip
EVERY = Param("betti_matching_every", "every", 1, "int >= 1", "compute the betti_matching term every N training "
              "steps (the trainer's iteration counter; the other steps skip it and log nothing for it)", integer,
              at_least_one)  # fmt: skip


class _Pending:
    """One call's crops on their way to the CPU (copied without blocking, waited for in ``compute``)."""

    def __init__(self, prob: Tensor, target: Tensor, counted: Tensor, host: Tensor, event: Any) -> None:
        self.prob, self.target, self.counted, self.host, self.event = prob, target, counted, host, event


class BettiMatchingTerm(LossTerm):
    """Betti-matching loss of the foreground probability against the target, on one random cube per sample.

    Shapes: ``logits`` ``(B, 2, *spatial)``, ``target`` ``(B, 1, *spatial)`` (3-D or 2-D). Each sample gets one
    random crop of edge ``crop`` (clipped to the patch; the position is drawn from ``(seed, step)``, so a resumed
    run draws the same crops). On the crop, the probability ``p`` and the 0/1 target (both 0 at ignore voxels, whose
    logit gradient is therefore exactly 0) go through topolosses' superlevel filtration (``1 − p``); the value per
    sample is topolosses' ``_single_betti_loss`` (sum over homology dimensions of the squared distances of matched
    bars plus the squared lengths of unmatched bars; no Dice part). Reduction: mean over the samples whose crop has
    at least one annotated voxel (0 with no gradient when none has).

    Cost: the persistent homology runs on the CPU (``std::async`` over the samples), so it is computed only when
    autograd is on (training; validation skips it) and only every ``every``-th step (``step``, set by the trainer;
    ``None`` = every call). A skipped call returns ``None`` and the compound loss leaves the term out of that step.
    :meth:`prepare` starts the crops' device-to-host copy before the other terms' kernels are queued, so on a GPU
    the copy and the CPU matching overlap with them.
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
        self._loss: Any = None

    def _engine(self) -> Any:
        if self._loss is None:
            from topolosses.losses.betti_matching import BettiMatchingLoss

            self._loss = BettiMatchingLoss(use_base_loss=False, alpha=1.0)
        return self._loss

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
        both = torch.stack([prob.detach(), target]).float()
        event = None
        if both.is_cuda:
            host = torch.empty(both.shape, dtype=both.dtype, pin_memory=True)
            host.copy_(both, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = both
        self._pending = _Pending(prob, target, counted, host, event)

    def compute(self, parts: FgParts, **maps: Tensor) -> Tensor | None:
        if self._pending is None:
            self.prepare(parts, **maps)
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        from topolosses.losses.betti_matching.src import betti_matching as engine

        if pending.event is not None:
            pending.event.synchronize()
        arrays = (1.0 - pending.host).numpy().astype(np.float64)  # superlevel filtration, as topolosses does
        results = engine.compute_matching(
            [np.ascontiguousarray(a) for a in arrays[0]], [np.ascontiguousarray(a) for a in arrays[1]],
            include_input1_unmatched_pairs=True, include_input2_unmatched_pairs=True,
        )  # fmt: skip
        loss = self._engine()
        values = torch.cat([
            loss._single_betti_loss(1.0 - pending.prob[i], 1.0 - pending.target[i], result)
            for i, result in enumerate(results)
        ])  # fmt: skip
        return batch_mean(values.to(parts.logit.dtype), pending.counted)


SPEC = TermSpec("betti_matching", BettiMatchingTerm, params=(CROP, EVERY))
