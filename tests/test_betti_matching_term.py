"""The ``betti_matching`` loss term: the sign of its gradient on tiny cases whose answer is known (a bridge between
two sheets is pushed apart, a hole in a sheet is filled), the ignore label, full resolution only, its step grid and
crops, and its configuration keys."""

from __future__ import annotations

import pytest
import torch

from nnunetv2_topo.losses import BettiMatchingTerm, TopologyLoss
from nnunetv2_topo.trainers import config as C

N = 12


def _logits(prob: torch.Tensor) -> torch.Tensor:
    """2-channel logits (B=1) whose softmax foreground probability is ``prob``."""
    fg = torch.logit(prob.double().clamp(1e-4, 1 - 1e-4))
    return torch.stack([torch.zeros_like(fg), fg])[None].requires_grad_(True)


def _fg_grad(logits: torch.Tensor) -> torch.Tensor:
    """d loss / d (l1 − l0): positive = gradient descent lowers the foreground probability there."""
    return (logits.grad[0, 1] - logits.grad[0, 0]) / 2


def _two_sheets_with_bridge() -> tuple[torch.Tensor, torch.Tensor, tuple]:
    prob = torch.full((N, N, N), 0.05)
    target = torch.zeros((N, N, N), dtype=torch.long)
    for z in (3, 8):
        prob[z], target[z] = 0.9, 1
    bridge = (slice(4, 8), 6, 6)
    prob[bridge] = 0.6  # the prediction merges the two sheets through a column of voxels
    return prob, target, bridge


def _sheet_with_hole() -> tuple[torch.Tensor, torch.Tensor, tuple]:
    prob = torch.full((N, N, N), 0.05)
    target = torch.zeros((N, N, N), dtype=torch.long)
    prob[5], target[5] = 0.9, 1
    hole = (5, slice(5, 7), slice(5, 7))
    prob[hole] = 0.3  # the prediction has a 2x2 hole through the sheet
    return prob, target, hole


def test_bridge_between_two_sheets_is_pushed_apart() -> None:
    prob, target, bridge = _two_sheets_with_bridge()
    logits = _logits(prob)
    loss = BettiMatchingTerm(crop=N)(logits, target[None, None])
    loss.backward()
    g = _fg_grad(logits)
    assert float(loss) > 0
    assert (g[bridge] >= 0).all() and (g[bridge] > 0).any()  # descent lowers the bridge's probability
    intact = prob.clone()  # the same sheets without the bridge: only the matched bars' small offsets remain
    intact[bridge] = 0.05
    assert float(BettiMatchingTerm(crop=N)(_logits(intact), target[None, None])) < float(loss) / 10


def test_hole_in_a_sheet_is_filled() -> None:
    prob, target, hole = _sheet_with_hole()
    logits = _logits(prob)
    loss = BettiMatchingTerm(crop=N)(logits, target[None, None])
    loss.backward()
    g = _fg_grad(logits)
    assert float(loss) > 0
    assert (g[hole] <= 0).all() and (g[hole] < 0).any()  # descent raises the hole's probability


def test_ignore_voxels_get_no_gradient_and_an_all_ignore_crop_is_left_out() -> None:
    prob, target, bridge = _two_sheets_with_bridge()
    target[bridge] = 2  # the bridge is unlabelled: nothing to learn there
    logits = _logits(prob)
    BettiMatchingTerm(crop=N)(logits, target[None, None]).backward()
    assert torch.all(logits.grad[0][:, target == 2] == 0)
    logits = _logits(prob)
    loss = BettiMatchingTerm(crop=N)(logits, torch.full((1, 1, N, N, N), 2))
    loss.backward()
    assert float(loss) == 0 and torch.all(logits.grad == 0)


def test_full_resolution_only_under_deep_supervision() -> None:
    prob, target, _ = _two_sheets_with_bridge()
    full = _logits(prob)
    low = torch.randn(1, 2, N // 2, N // 2, N // 2, dtype=torch.float64, requires_grad=True)
    loss = TopologyLoss({"betti_matching": 1.0}, betti_matching_crop=N)
    loss([full, low], [target[None, None], target[None, None, ::2, ::2, ::2]]).backward()
    assert full.grad.abs().sum() > 0
    assert low.grad is None or torch.all(low.grad == 0)


def test_step_grid_no_grad_and_crops_drawn_from_the_step() -> None:
    prob, target, _ = _two_sheets_with_bridge()
    loss = TopologyLoss({"ce": 1.0, "betti_matching": 1.0}, betti_matching_crop=6, betti_matching_every=2)
    logits = _logits(prob)
    for step, computed in ((0, True), (1, False), (2, True)):
        loss.set_step(step)
        loss(logits, target[None, None])
        assert ("betti_matching" in loss.last_terms) is computed
    with torch.no_grad():  # validation: skipped
        loss.set_step(0)
        loss(logits, target[None, None])
        assert "betti_matching" not in loss.last_terms
    term = BettiMatchingTerm(crop=6)
    term.step = 7
    first = term.crop_slices((N, N, 4), 2)
    assert first == term.crop_slices((N, N, 4), 2)  # a resumed run draws the same crops
    assert all(s.stop - s.start == e for sl in first for s, e in zip(sl, (6, 6, 4)))  # clipped to the patch
    term.step = 8
    assert term.crop_slices((N, N, 4), 2) != first


def test_only_term_skipped_gives_zero_loss_with_gradient() -> None:
    loss = TopologyLoss({"betti_matching": 1.0}, betti_matching_every=2)
    loss.set_step(1)
    logits = torch.randn(1, 2, 6, 6, 6, requires_grad=True)
    value = loss(logits, torch.zeros(1, 1, 6, 6, 6, dtype=torch.long))
    value.backward()
    assert float(value) == 0 and torch.all(logits.grad == 0)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [("betti_matching_crop", 1, "betti_matching_crop"), ("betti_matching_every", 0, "betti_matching_every"),
     ("betti_matching_crop", 2.5, "betti_matching_crop")],
)  # fmt: skip
def test_bad_keys_name_the_key(key, value, fragment) -> None:
    with pytest.raises(C.TopoConfigError, match=fragment):
        C.resolve_config({key: value}, source="cfg.yaml")


def test_usable_in_weights_and_schedule() -> None:
    cfg = C.resolve_config({
        "loss_weights": {"ce": 1, "dice": 1, "betti_matching": 0.1},
        "loss_schedule": {"betti_matching": {"start": 800, "ramp": 50}},
    })  # fmt: skip
    assert C.check_consistency(cfg, "cfg") == []
    assert cfg["loss_schedule"] == {"betti_matching": {"start": 800, "ramp": 50}}
