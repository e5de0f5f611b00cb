"""Batch reduction of the per-sample loss terms: the mean runs over the samples the term is defined for, so an
all-ignore sample (or, for skeleton recall and the boundary loss, a sample without skeleton/band) neither counts
as 0 nor dilutes the gradient of the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import IGNORE, make_batch

from nnunetv2_topo.losses import (
    BoundaryTerm,
    ClDiceTerm,
    DilatedMSETerm,
    FocalTerm,
    SkeletonRecallTerm,
    TopologyLoss,
)
from nnunetv2_topo.losses.masking import FgParts, batch_mean

PER_SAMPLE = {
    "focal": FocalTerm,
    "boundary": BoundaryTerm,
    "cldice": ClDiceTerm,
    "skeleton_recall": SkeletonRecallTerm,
    "dilated_mse": DilatedMSETerm,
}


def _value_and_grad(term, logits, labels):
    logits = logits.detach().clone().requires_grad_(True)
    value = term(logits, labels)
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad


@pytest.fixture(scope="module")
def batch():
    """Float64 logits of 3 samples; labels: sample 0 and 2 partly annotated, sample 1 entirely ignore."""
    logits, labels = make_batch(shape=(4, 7, 8), seeds=(2, 3, 4), dtype=torch.float64)
    labels = labels.clone()
    labels[1] = IGNORE
    return logits, labels


def test_batch_mean_exact_values():
    values = torch.tensor([0.25, float("nan"), 0.75, 2.0], dtype=torch.float64)
    counted = torch.tensor([True, False, True, False])
    assert batch_mean(values, counted).item() == 0.5
    assert batch_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    assert batch_mean(values[:1], torch.tensor([True])).item() == 0.25


@pytest.mark.parametrize("name", list(PER_SAMPLE))
def test_all_ignore_sample_is_left_out_of_value_and_gradient(name, batch):
    logits, labels = batch
    term = PER_SAMPLE[name](IGNORE)
    value, grad = _value_and_grad(term, logits, labels)
    kept = [0, 2]
    alone, grad_alone = _value_and_grad(term, logits[kept], labels[kept])
    # the value and gradients equal the batch without the all-ignore sample (before: 2/3 of them)
    assert value.item() == pytest.approx(alone.item(), rel=1e-12)
    torch.testing.assert_close(grad[kept], grad_alone, rtol=1e-12, atol=1e-15)
    assert torch.count_nonzero(grad[1]) == 0
    singles = [term(logits[[b]], labels[[b]]).item() for b in kept]
    assert value.item() == pytest.approx(np.mean(singles), rel=1e-12)


@pytest.mark.parametrize("name", list(PER_SAMPLE))
def test_all_ignore_batch_is_zero_with_zero_gradient(name, batch):
    logits, labels = batch
    value, grad = _value_and_grad(PER_SAMPLE[name](IGNORE), logits[[1]], labels[[1]])
    assert value.item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_focal_exact_value_with_an_all_ignore_sample(batch):
    """Independent numpy reference: the mean over the two annotated samples of their voxel means."""
    logits, labels = batch
    lg, lab = logits.numpy(), labels[:, 0].numpy()
    p = 1.0 / (1.0 + np.exp(lg[:, 0] - lg[:, 1]))
    t = lab == 1
    alpha, gamma = 0.25, 2.0
    pt = np.where(t, p, 1 - p)
    loss = -np.where(t, alpha, 1 - alpha) * (1 - pt) ** gamma * np.log(pt)
    ref = np.mean([loss[b][lab[b] != IGNORE].mean() for b in (0, 2)])
    assert FocalTerm(IGNORE)(logits, labels).item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("name", ["skeleton_recall", "boundary"])
def test_sample_without_skeleton_or_band_is_left_out(name, batch):
    """An annotated sample that is all background has no skeleton and no boundary: nothing to recall or weight."""
    logits, labels = batch
    labels = labels.clone()
    labels[1] = 0
    term = PER_SAMPLE[name](IGNORE)
    value = term(logits, labels).item()
    assert value == pytest.approx(term(logits[[0, 2]], labels[[0, 2]]).item(), rel=1e-12)


@pytest.mark.parametrize("name", ["focal", "cldice", "dilated_mse"])
def test_annotated_background_sample_still_counts(name, batch):
    """All background but annotated: the prediction there is wrong or right, so the sample counts."""
    logits, labels = batch
    labels = labels.clone()
    labels[1] = 0
    term = PER_SAMPLE[name](IGNORE)
    singles = [term(logits[[b]], labels[[b]]).item() for b in range(3)]
    assert term(logits, labels).item() == pytest.approx(np.mean(singles), rel=1e-12)


def test_per_sample_reports_values_and_counted(batch):
    logits, labels = batch
    values, counted = ClDiceTerm(IGNORE).per_sample(FgParts(logits, labels, IGNORE))
    assert values.shape == (3,) and counted.tolist() == [True, False, True]
    assert values[1].item() == 0.0  # what the old batch mean averaged in


def test_compound_logs_the_reduced_term(batch):
    logits, labels = batch
    loss = TopologyLoss({"ce": 1.0, "cldice": 0.5}, ignore_label=IGNORE)
    loss(logits, labels)
    assert loss.last_terms["cldice"] == pytest.approx(ClDiceTerm(IGNORE)(logits[[0, 2]], labels[[0, 2]]).item())
