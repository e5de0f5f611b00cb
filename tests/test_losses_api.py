"""TopologyLoss API: weights and parameter validation, deep supervision, zero-cost disabled terms, logging."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import IGNORE, make_batch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_topo.losses import (
    TERM_NAMES,
    ClDiceTerm,
    FocalTerm,
    SkeletonRecallTerm,
    TopologyLoss,
    default_ds_weights,
)


def ds_batch(n_scales=3, shape=(8, 8, 8)):
    logits, labels = make_batch(shape=shape)
    logits_l, labels_l = [logits], [labels]
    for i in range(1, n_scales):
        f = 2**i
        logits_l.append(torch.randn(2, 2, *(s // f for s in shape), generator=torch.Generator().manual_seed(i)))
        down = F.interpolate(labels.float(), scale_factor=1 / f, mode="nearest-exact").to(labels.dtype)
        labels_l.append(down)
    return logits_l, labels_l


def test_term_names_contract():
    assert TERM_NAMES == ("dice", "ce", "focal", "boundary", "cldice", "skeleton_recall", "dilated_mse",
                          "betti_matching")  # fmt: skip


def test_default_ds_weights_are_nnunets():
    assert default_ds_weights(1) == (1.0,)
    w = default_ds_weights(4)
    expected = [1, 0.5, 0.25, 0]
    assert w == pytest.approx([x / sum(expected) for x in expected])


def test_dice_plus_ce_equals_nnunet_default_loss_plus_one():
    logits_l, labels_l = ds_batch()
    weights = default_ds_weights(3)
    nnunet = DeepSupervisionWrapper(
        DC_and_CE_loss(
            {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=IGNORE,
            dice_class=MemoryEfficientSoftDiceLoss,
        ),
        weights,
    )
    ours = TopologyLoss({"dice": 1, "ce": 1}, ignore_label=IGNORE)
    torch.testing.assert_close(ours(logits_l, labels_l), nnunet(logits_l, labels_l) + 1.0)


def test_scale_terms_use_ds_weights_and_topology_terms_full_resolution():
    logits_l, labels_l = ds_batch()
    w = (0.5, 0.3, 0.2)
    loss_fn = TopologyLoss({"focal": 1.0, "cldice": 2.0}, ignore_label=IGNORE, ds_weights=w)
    total = loss_fn(logits_l, labels_l)
    focal = sum(wi * FocalTerm(IGNORE)(lg, lb) for wi, lg, lb in zip(w, logits_l, labels_l))
    cldice = ClDiceTerm(IGNORE)(logits_l[0], labels_l[0])
    torch.testing.assert_close(total, focal + 2.0 * cldice)
    assert loss_fn.last_terms["cldice"] == pytest.approx(cldice.item(), rel=1e-6)
    assert loss_fn.last_terms["focal"] == pytest.approx(focal.item(), rel=1e-6)
    # lower scales do not reach the topology term at all
    only_topo = TopologyLoss({"cldice": 1.0}, ignore_label=IGNORE)
    leaves = [lg.clone().requires_grad_(True) for lg in logits_l]
    only_topo(leaves, labels_l).backward()
    assert leaves[0].grad.abs().sum() > 0 and leaves[1].grad is None and leaves[2].grad is None


def test_topology_at_all_scales_recomputes_per_scale_targets():
    logits_l, labels_l = ds_batch()
    w = default_ds_weights(3)  # last scale weight 0: not computed
    loss_fn = TopologyLoss({"skeleton_recall": 1.0}, ignore_label=IGNORE, topology_at_all_scales=True)
    expected = sum(wi * SkeletonRecallTerm(IGNORE)(lg, lb) for wi, lg, lb in zip(w, logits_l, labels_l))
    torch.testing.assert_close(loss_fn(logits_l, labels_l), expected)
    # per-scale skeleton lists are used as given
    skels = [torch.zeros(lb.shape) for lb in labels_l]
    assert loss_fn(logits_l, labels_l, skeleton=skels).item() == 0.0
    with pytest.raises(ValueError, match="skeleton is a list of 2 scales but the logits have 3"):
        loss_fn(logits_l, labels_l, skeleton=skels[:2])


def test_deep_supervision_structure_errors():
    logits_l, labels_l = ds_batch()
    loss_fn = TopologyLoss({"dice": 1.0}, ignore_label=IGNORE)
    with pytest.raises(ValueError, match="both be tensors or both deep-supervision lists"):
        loss_fn(logits_l, labels_l[0])
    with pytest.raises(ValueError, match="3 logit scales but 2 target scales"):
        loss_fn(logits_l, labels_l[:2])
    with pytest.raises(ValueError, match="ds_weights has 2 entries but the logits have 3 scales"):
        TopologyLoss({"dice": 1.0}, ds_weights=(0.5, 0.5))(logits_l, labels_l)
    with pytest.raises(ValueError, match=r"logits\[1\] must be floating-point 2-channel logits"):
        loss_fn([logits_l[0], logits_l[1][:, :1]], labels_l[:2])
    with pytest.raises(ValueError, match="target must hold labels of shape"):
        loss_fn(logits_l[0], labels_l[1])


def test_zero_weight_terms_are_never_computed(monkeypatch):
    logits, labels = make_batch()
    loss_fn = TopologyLoss({"dice": 1.0, "cldice": 0.0, "focal": 0}, ignore_label=IGNORE)
    for name in TERM_NAMES:
        if name != "dice":
            monkeypatch.setattr(loss_fn.terms[name], "compute", lambda *a, **k: pytest.fail("computed a 0 term"))
    loss_fn(logits, labels)
    assert set(loss_fn.last_terms) == {"dice", "total"}
    assert loss_fn.last_terms["dice"] == pytest.approx(loss_fn.last_terms["total"])


def test_last_terms_are_unweighted_floats_and_required_targets():
    logits, labels = make_batch()
    loss_fn = TopologyLoss({"ce": 2.0, "skeleton_recall": 0.5, "boundary": 0.25}, ignore_label=IGNORE)
    assert loss_fn.last_terms == {}
    total = loss_fn(logits, labels)
    terms = loss_fn.last_terms
    assert all(type(v) is float for v in terms.values())
    assert terms["total"] == pytest.approx(total.item())
    assert terms["total"] == pytest.approx(2 * terms["ce"] + 0.5 * terms["skeleton_recall"] + 0.25 * terms["boundary"])
    assert loss_fn.required_targets == ("skeleton", "band")  # channel order, whatever the weights' order
    assert loss_fn.target_params == {"skeleton_tube": 0, "boundary_band": (3.0, 5.0)}
    assert TopologyLoss({"dice": 1, "cldice": 1}).required_targets == ()
    assert TopologyLoss({"skeleton_recall": 1}, skeleton_tube=2).target_params == {"skeleton_tube": 2}


def test_works_without_ignore_label_and_in_2d():
    logits, labels = make_batch()
    labels = torch.where(labels == IGNORE, torch.zeros_like(labels), labels)
    weights = {n: 1.0 for n in TERM_NAMES}
    a = TopologyLoss(weights, ignore_label=None)(logits, labels)
    b = TopologyLoss(weights, ignore_label=IGNORE)(logits, labels)
    torch.testing.assert_close(a, b)
    two_d = TopologyLoss(weights, ignore_label=IGNORE)(logits[:, :, 0], labels[:, :, 0])
    assert torch.isfinite(two_d)


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"dice": 1.0, "clDice": 1.0}, r"unknown loss term\(s\) \['clDice'\]; the terms are dice, ce, focal"),
        ({"dice": -1.0}, "weight of loss term 'dice' = -1.0 is invalid: must be >= 0"),
        ({"focal": math.nan}, "weight of loss term 'focal' = nan is invalid: must be finite"),
        ({"ce": "lots"}, "weight of loss term 'ce' = 'lots' is invalid: must be a number"),
        ({"ce": True}, "weight of loss term 'ce' = True is invalid: must be a number, not a boolean"),
        ({"dice": 0, "ce": 0.0}, "all loss weights are 0; give at least one of dice, ce,"),
        ({}, "all loss weights are 0"),
        ([("dice", 1.0)], "loss weights must be a mapping term -> weight, not list"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        TopologyLoss(weights)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"focal_alpha": 1.5}, "focal_alpha"),
        ({"focal_gamma": -1}, "focal_gamma"),
        ({"focal_gamma": math.inf}, "focal_gamma"),
        ({"cldice_iterations": -1}, "cldice_iterations"),
        ({"cldice_iterations": 0}, r"cldice_iterations must be >= 1 \(int >= 1\), got 0"),
        ({"cldice_iterations": 2.5}, "cldice_iterations"),
        ({"focal_beta": 1.0}, r"unknown loss parameter\(s\) \['focal_beta'\]; the parameters are focal_alpha"),
        ({"skeleton_tube": -1}, "skeleton_tube"),
        ({"boundary_band": (5.0, 3.0)}, "boundary_band"),
        ({"boundary_band": 3.0}, "boundary_band"),
        ({"ds_weights": (0.5, -0.5)}, "ds_weights"),
        ({"ds_weights": (0, 0)}, "ds_weights"),
        ({"ds_weights": "ab"}, "ds_weights"),
        ({"ignore_label": "2"}, "ignore_label"),
    ],
)
def test_bad_term_parameters_name_the_parameter(kwargs, match):
    # validated even when the term's weight is 0, so a typo in a config fails at once
    with pytest.raises(ValueError, match=match):
        TopologyLoss({"dice": 1.0}, **kwargs)
