"""Each term against an independent numpy/scipy reference on a tiny example, plus gradchecks in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import scipy_band
from loss_helpers import IGNORE, make_batch
from scipy import ndimage

from nnunetv2_topo.losses import (
    BoundaryTerm,
    ClDiceTerm,
    CrossEntropyTerm,
    DiceTerm,
    DilatedMSETerm,
    FocalTerm,
    SkeletonRecallTerm,
    TopologyLoss,
    soft_dilate,
    soft_erode,
)
from nnunetv2_topo.transforms import compute_batch_target


@pytest.fixture(scope="module")
def example():
    logits, labels = make_batch(shape=(4, 7, 8), seeds=(2, 3), dtype=torch.float64)
    lg = logits.numpy()
    lab = labels[:, 0].numpy()
    e = np.exp(lg - lg.max(axis=1, keepdims=True))
    p = e[:, 1] / e.sum(axis=1)  # softmax foreground, (B, Z, Y, X)
    valid = lab != IGNORE
    t = (lab == 1).astype(np.float64)
    return logits, labels, p, t, valid, lab


def per_sample(values, weights):
    return np.mean([(v * w).sum() / max(w.sum(), 1.0) for v, w in zip(values, weights)])


def bce(p, t):
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def test_dice(example):
    logits, labels, p, t, m, _ = example
    ref = np.mean([1 - (2 * (p[b] * t[b] * m[b]).sum() + 1e-5) / ((p[b] * m[b]).sum() + (t[b] * m[b]).sum() + 1e-5)
                   for b in range(2)])  # fmt: skip
    assert DiceTerm(IGNORE)(logits, labels).item() == pytest.approx(ref, rel=1e-6)


def test_cross_entropy(example):
    logits, labels, p, t, m, _ = example
    ref = bce(p, t)[m].mean()  # 2-class CE of the softmax == BCE of its foreground probability
    assert CrossEntropyTerm(IGNORE)(logits, labels).item() == pytest.approx(ref, rel=1e-9)


def test_focal(example):
    logits, labels, p, t, m, _ = example
    alpha, gamma = 0.3, 1.5
    pt = np.where(t == 1, p, 1 - p)
    at = np.where(t == 1, alpha, 1 - alpha)
    ref = per_sample(-at * (1 - pt) ** gamma * np.log(pt), m)
    assert FocalTerm(IGNORE, alpha=alpha, gamma=gamma)(logits, labels).item() == pytest.approx(ref, rel=1e-9)


def test_boundary(example):
    logits, labels, p, t, m, lab = example
    w = np.stack([scipy_band(lab[b]) for b in range(2)])
    ref = np.mean([(bce(p[b], t[b]) * w[b]).sum() / w[b].sum() for b in range(2)])
    assert BoundaryTerm(IGNORE)(logits, labels).item() == pytest.approx(ref, rel=1e-6)


def np_skeleton(x, iters):
    """The seed's soft skeleton, literally (erosion recomputed), with scipy filters."""
    cross = ndimage.generate_binary_structure(3, 1)

    def erode(a):
        return ndimage.minimum_filter(a, footprint=cross, mode="constant", cval=np.inf)

    def dilate(a):
        return ndimage.maximum_filter(a, size=3, mode="constant", cval=-np.inf)

    def relu(a):
        return np.maximum(a, 0)

    skel = relu(x - dilate(erode(x)))
    for _ in range(iters):
        x = erode(x)
        d = relu(x - dilate(erode(x)))
        skel = skel + relu(d - skel * d)
    return skel


def test_cldice(example):
    logits, labels, p, t, m, _ = example
    refs = []
    for b in range(2):
        pm, tm = p[b] * m[b], t[b] * m[b]
        sp, st = np_skeleton(pm, 2) * m[b], np_skeleton(tm, 2) * m[b]
        tprec = ((sp * tm).sum() + 1) / (sp.sum() + 1)
        tsens = ((st * pm).sum() + 1) / (st.sum() + 1)
        refs.append(1 - 2 * tprec * tsens / (tprec + tsens))
    assert ClDiceTerm(IGNORE, iterations=2)(logits, labels).item() == pytest.approx(np.mean(refs), rel=1e-9)


def test_skeleton_recall_with_given_skeleton(example):
    logits, labels, p, t, m, _ = example
    rng = np.random.default_rng(0)
    skel = ((rng.random(t.shape) < 0.5) & (t == 1)).astype(np.float64)
    ref = np.mean([1 - ((p[b] * skel[b] * m[b]).sum() + 1e-5) / ((skel[b] * m[b]).sum() + 1e-5) for b in range(2)])
    got = SkeletonRecallTerm(IGNORE)(logits, labels, skeleton=torch.from_numpy(skel)[:, None])
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_dilated_mse(example):
    logits, labels, p, t, m, _ = example

    def dilate(a):
        return ndimage.maximum_filter(a, size=3, mode="constant", cval=-np.inf)

    sq = np.stack([(dilate(p[b] * m[b]) - dilate(t[b] * m[b])) ** 2 for b in range(2)])
    assert DilatedMSETerm(IGNORE)(logits, labels).item() == pytest.approx(per_sample(sq, m), rel=1e-9)


def test_compound_is_weighted_sum_with_seed_weights(example):
    logits, labels, *_ = example
    weights = {"dice": 0.3, "focal": 0.4, "boundary": 0.15, "cldice": 0.10, "dilated_mse": 0.05}
    loss_fn = TopologyLoss(weights, ignore_label=IGNORE, focal_alpha=0.34)
    total = loss_fn(logits, labels)
    terms = {
        "dice": DiceTerm(IGNORE),
        "focal": FocalTerm(IGNORE, alpha=0.34),
        "boundary": BoundaryTerm(IGNORE),
        "cldice": ClDiceTerm(IGNORE, iterations=3),
        "dilated_mse": DilatedMSETerm(IGNORE),
    }
    expected = sum(w * terms[n](logits, labels).item() for n, w in weights.items())
    assert total.item() == pytest.approx(expected, rel=1e-6)  # nnU-Net Dice sums in float32
    assert set(loss_fn.last_terms) == {*weights, "total"}
    assert loss_fn.last_terms["total"] == pytest.approx(expected, rel=1e-6)


def test_dilated_mse_does_not_see_a_hole():
    # honest documentation: a one-voxel hole through a sheet is invisible to the dilated MSE
    labels = torch.zeros(1, 1, 5, 7, 7, dtype=torch.int16)
    labels[:, :, :, 3, :] = 1
    hole = labels.clone()
    hole[0, 0, 2, 3, 3] = 0
    pred = torch.cat([-20.0 * (hole * 2 - 1), 20.0 * (hole * 2 - 1)], dim=1).float()
    assert DilatedMSETerm(IGNORE)(pred, labels).item() < 1e-12
    assert CrossEntropyTerm(IGNORE)(pred, labels).item() > 0.01


# ---- gradchecks (float64) -------------------------------------------------------------------------------------


def test_morphology_matches_max_pool_values_and_gradients():
    x = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    pool = torch.nn.functional.max_pool3d
    ref_erode = torch.stack([-pool(-x, k, 1, tuple(i // 2 for i in k)) for k in ((3, 1, 1), (1, 3, 1), (1, 1, 3))])
    for ours, ref in ((soft_erode(x), ref_erode.amin(0)), (soft_dilate(x), pool(x, 3, 1, 1))):
        assert torch.equal(ours, ref)
        g = torch.randn_like(ours)
        torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert torch.autograd.gradcheck(soft_erode, (x,))
    assert torch.autograd.gradcheck(soft_dilate, (x,))
    x2 = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)  # 2-D works too
    assert torch.autograd.gradcheck(soft_erode, (x2,)) and torch.autograd.gradcheck(soft_dilate, (x2,))


@pytest.mark.parametrize(
    "term",
    [FocalTerm(IGNORE), FocalTerm(IGNORE, gamma=0.5), BoundaryTerm(IGNORE), ClDiceTerm(IGNORE, iterations=2),
     SkeletonRecallTerm(IGNORE), DilatedMSETerm(IGNORE), CrossEntropyTerm(IGNORE)],
    ids=lambda t: type(t).__name__,
)  # fmt: skip
def test_gradcheck_float64(term):
    logits, labels = make_batch(shape=(3, 4, 5), dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda lg: term(lg, labels), (logits,))


def test_gradcheck_dice_and_compound():
    # nnU-Net's Dice sums in float32 (``sum(dtype=torch.float32)``), so its check needs a float32-sized step
    logits, labels = make_batch(shape=(3, 4, 5), dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda lg: DiceTerm(IGNORE)(lg, labels), (logits,), eps=1e-3, atol=1e-4)
    maps = {name: compute_batch_target(labels, name, IGNORE).double() for name in ("skeleton", "band")}
    everything = TopologyLoss({"dice": 1, "ce": 1, "focal": 1, "boundary": 1, "cldice": 1, "skeleton_recall": 1,
                               "dilated_mse": 1}, ignore_label=IGNORE)  # fmt: skip
    # the full Jacobian check is per-term above; here the cheaper random-projection check of the sum
    check = torch.autograd.gradcheck(
        lambda lg: everything(lg, labels, **maps), (logits,), eps=1e-3, atol=1e-4, fast_mode=True
    )
    assert check
