"""Fusion of several models' maps: exact weighted means in logit and probability space, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_topo.postprocessing.fusion import (
    LOGIT_CLAMP,
    Fusion,
    check_fusion_weights,
    logit_to_probability,
    probability_to_logit,
)


def test_probability_to_logit_exact_and_clamped() -> None:
    p = np.array([[[0.5, 0.75, 0.2, 0.0, 1.0]]], np.float32)
    got = probability_to_logit(p)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[0, 0, :3], [0.0, np.log(3.0), np.log(0.25)], rtol=1e-6)
    assert got[0, 0, 3] == -LOGIT_CLAMP and got[0, 0, 4] == LOGIT_CLAMP


def test_logit_round_trip_and_no_overflow() -> None:
    p = np.linspace(0.01, 0.99, 27, dtype=np.float32).reshape(3, 3, 3)
    np.testing.assert_allclose(logit_to_probability(probability_to_logit(p)), p, atol=1e-6)
    with np.errstate(over="raise"):
        extreme = logit_to_probability(np.array([[[-1e4, 1e4]]], np.float32))
    assert extreme.tolist() == [[[0.0, 1.0]]]


def test_weights() -> None:
    assert check_fusion_weights(None, 3) == (1.0, 1.0, 1.0)
    assert check_fusion_weights([1, 0], 2) == (1.0, 0.0)
    for weights, n, match in [
        ([1.0], 2, "1 fusion weight.* for 2 input"),
        ([1, -1], 2, ">= 0"),
        ([1, float("nan")], 2, "finite"),
        ([0, 0], 2, "sum to 0"),
        (["a", 1], 2, "numbers"),
        (None, 0, "at least one input"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_fusion_weights(weights, n)


def test_logit_fusion_is_weighted_mean_of_logits() -> None:
    a = np.full((2, 2, 2), 0.9, np.float32)
    b = np.full((2, 2, 2), 0.2, np.float32)
    f = Fusion("logit")
    f.add_probability(a, 1.0)
    f.add_probability(b, 3.0)
    mean = (np.log(9.0) + 3 * np.log(0.25)) / 4
    np.testing.assert_allclose(f.probability(), 1 / (1 + np.exp(-mean)), rtol=1e-6)


def test_prob_fusion_is_weighted_mean_of_probabilities() -> None:
    f = Fusion("prob")
    f.add_probability(np.full((3, 2, 2), 0.9, np.float32), 0.25)
    f.add_logit(np.zeros((3, 2, 2), np.float32), 0.75)  # p = 0.5
    np.testing.assert_allclose(f.probability(), 0.25 * 0.9 + 0.75 * 0.5, rtol=1e-6)


def test_logit_inputs_and_probability_inputs_agree() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (40, 5, 6)).astype(np.float32)  # 40 slices: more than one slab
    via_p, via_l = Fusion("logit"), Fusion("logit")
    via_p.add_probability(p, 2.0)
    via_l.add_logit(np.log(p / (1 - p)), 2.0)
    np.testing.assert_allclose(via_p.probability(), via_l.probability(), atol=1e-6)
    np.testing.assert_allclose(via_p.probability(), p, atol=1e-6)


def test_fusion_errors() -> None:
    with pytest.raises(ValueError, match="logit, prob"):
        Fusion("mean")
    f = Fusion()
    with pytest.raises(ValueError, match="nothing to fuse"):
        f.probability()
    f.add_probability(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 3\) differs"):
        f.add_probability(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="3-D"):
        f.add_probability(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        f.add_probability(np.zeros((2, 2, 2), np.float32), -1)
    zero = Fusion()
    zero.add_probability(np.zeros((2, 2, 2), np.float32), 0.0)
    with pytest.raises(ValueError, match="sum to 0"):
        zero.probability()
