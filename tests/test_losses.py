"""Invariants of every loss term and of the compound TopologyLoss (CPU, tiny tensors)."""

from __future__ import annotations

import pytest
import torch
from loss_helpers import IGNORE, make_batch, perfect_logits

from nnunetv2_topo.losses import TERM_NAMES, TopologyLoss
from nnunetv2_topo.transforms import compute_batch_target

ALL = "all"
CASES = (*TERM_NAMES, ALL)


def loss_for(name: str, **kwargs) -> TopologyLoss:
    weights = {n: 1.0 for n in TERM_NAMES} if name == ALL else {name: 1.0}
    return TopologyLoss(weights, ignore_label=IGNORE, **kwargs)


def value_and_grad(loss_fn, logits, labels, **maps):
    logits = logits.detach().clone().requires_grad_(True)
    loss = loss_fn(logits, labels, **maps)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


# ---- 1. ignore ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_ignore_voxels_change_nothing_and_get_zero_gradient(name):
    logits, labels = make_batch()
    loss_fn = loss_for(name)
    ignore = (labels == IGNORE).expand_as(logits)
    assert ignore.any()
    base, grad = value_and_grad(loss_fn, logits, labels)
    other = torch.where(ignore, torch.randn(logits.shape, generator=torch.Generator().manual_seed(9)) * 40, logits)
    changed, grad_changed = value_and_grad(loss_fn, other, labels)
    assert torch.equal(base, changed)
    assert torch.equal(grad, grad_changed)
    assert (grad[ignore] == 0).all()
    assert grad[~ignore].abs().sum() > 0


def test_targets_never_treat_ignore_as_foreground():
    _, labels = make_batch()
    as_background = torch.where(labels == IGNORE, torch.zeros_like(labels), labels)
    for name in ("skeleton", "band"):
        a = compute_batch_target(labels, name, IGNORE)
        b = compute_batch_target(as_background, name, IGNORE)
        assert (a[labels == IGNORE] == 0).all()
        assert torch.equal(a[labels != IGNORE], b[labels != IGNORE])


# ---- 2. perfect vs wrong --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_perfect_prediction_is_minimum_and_wrong_is_larger(name):
    _, labels = make_batch()
    loss_fn = loss_for(name)
    perfect = loss_fn(perfect_logits(labels), labels).item()
    wrong = loss_fn(-perfect_logits(labels), labels).item()
    assert 0.0 <= perfect < 1e-4
    assert wrong > 0.1 and wrong > 1000 * perfect
    random = loss_fn(make_batch()[0], labels).item()
    assert perfect < random


# ---- 3. batch independence ------------------------------------------------------------------------------------


def relabel_keeping_ignore(labels: torch.Tensor, sample: int, seed: int) -> torch.Tensor:
    out = labels.clone()
    g = torch.Generator().manual_seed(seed)
    fresh = (torch.rand(labels[sample].shape, generator=g) < 0.3).to(labels.dtype)
    out[sample] = torch.where(labels[sample] == IGNORE, labels[sample], fresh)
    return out


@pytest.mark.parametrize("name", CASES)
def test_sample_gradient_does_not_depend_on_other_samples_target(name):
    logits, labels = make_batch()
    loss_fn = loss_for(name)
    _, grad = value_and_grad(loss_fn, logits, labels)
    _, grad_other = value_and_grad(loss_fn, logits, relabel_keeping_ignore(labels, 1, seed=5))
    torch.testing.assert_close(grad[0], grad_other[0], rtol=0, atol=1e-7)
    assert not torch.allclose(grad[1], grad_other[1])


@pytest.mark.parametrize("name", [n for n in TERM_NAMES if n != "ce"])
def test_per_sample_terms_average_samples(name):
    # every term but nnU-Net's CE (a mean over all annotated voxels of the batch) is a mean of per-sample values
    logits, labels = make_batch(seeds=(0, 4))
    loss_fn = loss_for(name)
    both = loss_fn(logits, labels)
    singles = [loss_fn(logits[i : i + 1], labels[i : i + 1]) for i in range(2)]
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2)


def test_precomputed_maps_must_have_explicit_batch_shape():
    logits, labels = make_batch()
    skeleton = compute_batch_target(labels, "skeleton", IGNORE)
    loss_fn = loss_for("skeleton_recall")
    torch.testing.assert_close(loss_fn(logits, labels, skeleton=skeleton), loss_fn(logits, labels))
    with pytest.raises(ValueError, match=r"skeleton must have shape \(B, 1, \*spatial\)"):
        loss_fn(logits, labels, skeleton=skeleton[:1])  # would broadcast sample 0's skeleton to sample 1
    with pytest.raises(ValueError, match="band must have shape"):
        loss_for("boundary")(logits, labels, band=compute_batch_target(labels, "band", IGNORE)[:, :, 1:])


# ---- 4. no NaN / inf ------------------------------------------------------------------------------------------


def finite_everywhere(loss_fn, logits, labels):
    logits = logits.detach().clone().requires_grad_(True)
    loss = loss_fn(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(torch.tensor(v)) for v in loss_fn.last_terms.values())
    assert torch.isfinite(logits.grad).all()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("name", CASES)
def test_degenerate_patches_are_finite(name):
    logits, labels = make_batch()
    loss_fn = loss_for(name)
    empty = torch.zeros_like(labels)
    finite_everywhere(loss_fn, logits, empty)
    finite_everywhere(loss_fn, logits, torch.ones_like(labels))
    loss, grad = finite_everywhere(loss_fn, logits, torch.full_like(labels, IGNORE))
    assert loss == 0 and (grad == 0).all()
    # a confident empty prediction on an empty patch is perfect
    assert loss_fn(perfect_logits(empty), empty) < 1e-4
    huge = torch.sign(logits) * 1e4
    finite_everywhere(loss_fn, huge, labels)
    loss, _ = finite_everywhere(loss_fn, perfect_logits(labels, margin=1e4), labels)
    assert loss < 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_half_precision_is_computed_in_fp32(dtype):
    logits, labels = make_batch()
    conv = torch.nn.Conv3d(2, 2, 1)
    loss_fn = loss_for(ALL)
    with torch.autocast("cpu", dtype=dtype):
        out = conv(logits * 3000)  # half-precision logits of large magnitude
        assert out.dtype == dtype
        loss = loss_fn(out, labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    torch.testing.assert_close(loss.detach(), loss_fn(out.detach().float(), labels))
