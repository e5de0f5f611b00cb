"""``nnUNetTrainer_TopoBudget``: nnU-Net's trainer with the budget and the ``seed`` of ``nnUNet_topo_config``, so
that a benchmark pairs it with the TopoWarmup trainers run by run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainer_fixtures import make_trainer, prepare_loop

from nnunetv2_topo.trainers import nnUNetTrainer_TopoBudget, nnUNetTrainerTopoWarmup

BUDGET = {"num_epochs": 3, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1, "warmup_epochs": 1}


def _weights(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.network.parameters()]


def test_budget_and_seed_are_taken_and_the_rest_is_nnunets(tmp_path, monkeypatch) -> None:
    t = make_trainer(tmp_path, monkeypatch, nnUNetTrainer_TopoBudget, {**BUDGET, "seed": 3, "initial_lr": 0.5})
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch, t.seed) == (3, 2, 1, 3)
    assert t.initial_lr == 1e-2  # validated, then ignored: nnU-Net's own schedule
    assert type(t.optimizer) is torch.optim.SGD


def test_same_seed_same_initial_weights_as_topowarmup_other_seed_differs(tmp_path, monkeypatch) -> None:
    base = _weights(make_trainer(tmp_path / "a", monkeypatch, nnUNet_TopoBudget := nnUNetTrainer_TopoBudget,
                                 {**BUDGET, "seed": 7}))  # fmt: skip
    again = _weights(make_trainer(tmp_path / "b", monkeypatch, nnUNet_TopoBudget, {**BUDGET, "seed": 7}))
    topo = _weights(make_trainer(tmp_path / "c", monkeypatch, nnUNetTrainerTopoWarmup, {**BUDGET, "seed": 7}))
    other = _weights(make_trainer(tmp_path / "d", monkeypatch, nnUNet_TopoBudget, {**BUDGET, "seed": 8}))
    assert all(torch.equal(x, y) for x, y in zip(base, again, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(base, topo, strict=True))  # paired runs start from one network
    assert not all(torch.equal(x, y) for x, y in zip(base, other, strict=True))


@pytest.mark.parametrize("seed, same", [(5, True), (6, False)])
def test_seed_sets_the_data_stream_at_train_start(tmp_path, monkeypatch, seed: int, same: bool) -> None:
    """The patch sampler draws from numpy's global generator: after ``on_train_start`` it is in the state the
    TopoWarmup trainers leave it in for the same seed."""
    draws = []
    for name, cls, s in (("a", nnUNetTrainer_TopoBudget, 5), ("b", nnUNetTrainerTopoWarmup, seed)):
        prepare_loop(tmp_path / name)
        t = make_trainer(tmp_path / name, monkeypatch, cls, {**BUDGET, "seed": s, "loss_weights": {"ce": 1, "dice": 1}})
        monkeypatch.setattr(type(t), "get_dataloaders", lambda self: (iter(()), iter(())))
        t.on_train_start()
        draws.append(np.random.random(4))
        t.on_train_end()
    assert np.array_equal(draws[0], draws[1]) is same
