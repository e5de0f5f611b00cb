"""The trainer's components on their own (no trainer where none is needed): guarded step, loss adapter helpers,
score-round controller without DDP, final-validation sidecars, EMA state, and the checkpoint payload against the
keys nnU-Net's own ``save_checkpoint`` writes."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import Future

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from trainer_fixtures import make_trainer

from nnunetv2_topo.trainers import nnUNetTrainer_TopoBudget, nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.checkpoint import load_checkpoint_file
from nnunetv2_topo.trainers.final_validation import FinalValidation
from nnunetv2_topo.trainers.guarded_step import GuardedStep
from nnunetv2_topo.trainers.loss_adapter import deep_supervision_weights
from nnunetv2_topo.trainers.score_controller import ScoreRoundController
from nnunetv2_topo.trainers.score_rounds import ScoreRound
from nnunetv2_topo.trainers.weight_ema import WeightEMA


# ---------------------------------------------------------------------- guarded step
def _model_and_loss(scale: float = 100.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = (model(torch.ones(2, 4)) * scale).pow(2).mean()
    return model, opt, loss


def test_guarded_step_clips_to_the_norm_and_steps() -> None:
    model, opt, loss = _model_and_loss()
    before = [p.detach().clone() for p in model.parameters()]
    logs: list[str] = []
    guard = GuardedStep(2.0, 3, 1, log=lambda m, **_: logs.append(m))
    result = guard.step(loss, model, opt)
    assert result.stepped and result.grad_norm > 2.0
    step = torch.cat([(b - p.detach()).ravel() for b, p in zip(before, model.parameters())])
    assert float(step.norm()) == pytest.approx(0.1 * 2.0, rel=1e-5)  # lr * clipped norm
    guard.record(result, 0, 0.1, {})
    assert logs[0].startswith("iteration 0: grad norm (pre-clip)") and guard.epoch_grad_norms == [result.grad_norm]


def test_guarded_step_skips_non_finite_and_stops_after_the_limit() -> None:
    model, opt, _ = _model_and_loss()
    guard = GuardedStep(2.0, 2, 50, log=lambda m, **_: None, initial_lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    nan_loss = model(torch.ones(1, 4)).sum() * math.nan
    result = guard.step(nan_loss, model, opt)
    assert not result.stepped and all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    guard.record(result, 1, 0.1, {"ce": math.nan})
    assert guard.state_dict() == {"consecutive_skips": 1, "total_skipped_steps": 1}
    opt.zero_grad()
    with pytest.raises(RuntimeError, match=r"2 consecutive steps .* lower initial_lr \(now 0.1\)"):
        guard.record(guard.step(model(torch.ones(1, 4)).sum() * math.inf, model, opt), 2, 0.1, {"ce": math.inf})
    restored = GuardedStep(2.0, 2, 50)
    restored.load_state_dict({"consecutive_skips": 1, "total_skipped_steps": 7})
    assert (restored.consecutive_skips, restored.total_skipped_steps) == (1, 7)


def test_deep_supervision_weights_are_nnunets() -> None:
    assert deep_supervision_weights(3, False) == pytest.approx([1 / 1.5, 0.5 / 1.5, 0.0])
    w = deep_supervision_weights(3, True)
    assert w[2] > 0 and sum(w) == pytest.approx(1.0)


# ---------------------------------------------------------------------- EMA state
def test_ema_state_holds_no_weights_and_restores_from_network_weights() -> None:
    net = torch.nn.Linear(3, 2)
    ema = WeightEMA(net, 0.5)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update(net)
    state = ema.state_dict()
    assert state == {"decay": 0.5, "num_updates": 3}
    other = WeightEMA(torch.nn.Linear(3, 2), 0.5)
    other.load_state_dict(state, weights=ema.weights())
    assert other.num_updates == 3 and all(torch.equal(ema.weights()[k], other.weights()[k]) for k in ema.weights())
    with pytest.raises(ValueError, match="needs the averaged weights"):
        other.load_state_dict(state)
    # checkpoints before the EMA was stored once held torch's AveragedModel state
    averaged = AveragedModel(net, use_buffers=True)
    averaged.n_averaged.fill_(3)
    older = WeightEMA(torch.nn.Linear(3, 2), 0.5)
    older.load_state_dict({"decay": 0.5, "averaged": averaged.state_dict()})
    assert older.num_updates == 3 and torch.equal(older.weights()["weight"], net.weight)


def test_ema_equals_torchs_averaged_model() -> None:
    """The foreach update (a Python-int counter, no host-device copy) computes what AveragedModel computes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ours = WeightEMA(net, 0.9)
    torchs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(5, 3))  # moves the running statistics and num_batches_tracked
        ours.update(net)
        torchs.update_parameters(net)
    expected = torchs.module.state_dict()
    assert ours.num_updates == 4 and set(ours.weights()) == set(expected)
    for key, value in ours.weights().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- score rounds (one process)
class _Pool:
    """Hands back pre-made futures instead of a scoring process."""

    def __init__(self, futures: list[Future]) -> None:
        self.futures = list(futures)

    def submit(self, *args, **kwargs) -> Future:
        return self.futures.pop(0)

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


def _result(score: float) -> dict[str, float]:
    return {"score": score, "topo": score, "surface_dice": score, "voi_score": score, "seconds": 0.1}


def test_controller_applies_a_round_once_finished_or_when_forced() -> None:
    import threading

    pending = [Future(), Future()]
    controller = ScoreRoundController(2, log=lambda m, **_: None, pool=_Pool(pending), poll_seconds=0.01)
    assert [controller.due(e) for e in range(4)] == [False, True, False, True]
    cases = controller.choose_cases(["c", "a", "b"], 2, 0)
    assert cases == sorted(cases) and len(cases) == 2
    predicted = []
    controller.start(1, cases, lambda mine: ((predicted.append(c) or 0, f"{c}.tif") for c in mine), object)
    assert predicted == cases
    assert controller.collect(2, must_wait=False) == []  # still scoring: nothing applied, nothing waited for
    pending[0].set_result(_result(0.4))
    threading.Timer(0.2, pending[1].set_result, args=(_result(0.6),)).start()
    t0 = time.perf_counter()
    (record,) = controller.collect(3, must_wait=True)
    assert time.perf_counter() - t0 >= 0.15
    assert (record["epoch"], record["applied_epoch"], record["num_cases"]) == (1, 3, 2)
    assert record["score"] == pytest.approx(0.5) and record["error"] is None
    assert controller.accept(record) and controller.best_score == pytest.approx(0.5)
    assert controller.pending is None and controller.collect(4, must_wait=True) == []


def test_a_failed_case_names_itself_and_keeps_the_best() -> None:
    ok, failed = Future(), Future()
    ok.set_result(_result(0.9))
    failed.set_exception(MemoryError("no memory"))
    record = ScoreRound(3, ["x", "y"], {}, futures=[ok, failed]).record(applied_epoch=4)
    assert math.isnan(record["score"]) and record["error"] == "y: MemoryError: no memory"
    controller = ScoreRoundController(1)
    controller.best_score = 0.2
    assert not controller.accept(record) and controller.best_score == 0.2 and controller.records == [record]


def test_rounds_are_never_capped() -> None:
    """However slow the last round was, the next one scores every case (a capped round would be compared with a
    best of full rounds); without a process group nothing is warned about."""
    logs: list[str] = []
    controller = ScoreRoundController(1, log=lambda m, **_: logs.append(m), pool=_Pool([Future() for _ in range(3)]))
    controller.seconds_per_case = 1e6
    controller.check_imbalance()
    started = controller.start(1, ["a", "b", "c"], lambda mine: ((0, f"{c}.tif") for c in mine), object)
    assert started.cases == ["a", "b", "c"] and len(started.futures) == 3 and logs == []


def test_best_score_file_without_its_own_score_is_looked_up_in_the_records() -> None:
    logs: list[str] = []
    controller = ScoreRoundController(1, log=lambda m, **_: logs.append(m))
    controller.load_state_dict({"records": [{"epoch": 4, "score": 0.8}], "best_score": 0.5, "best_score_epoch": 2})
    # an older file: its score_rounds are the state before its own round (epoch 4, current_epoch 5)
    controller.adopt_best_of_file({"current_epoch": 5, "topo_state": {"score_rounds": {"best_score": 0.5}}}, "f.pth")
    assert (controller.best_score, controller.best_score_epoch) == (0.8, 4)
    unknown = ScoreRoundController(1, log=lambda m, **_: logs.append(m))
    unknown.adopt_best_of_file({"current_epoch": 9, "topo_state": {}}, "g.pth")
    assert unknown.best_score is None and "g.pth does not say which score it holds" in logs[-1]


# ---------------------------------------------------------------------- final validation
def test_spacing_sidecars_are_copied_once_and_only_for_tiff(tmp_path) -> None:
    gt, raw = tmp_path / "gt", tmp_path / "labelsTr"
    gt.mkdir(), raw.mkdir()
    for case in ("a", "b"):
        (gt / f"{case}.tif").write_bytes(b"")
        (raw / f"{case}.json").write_text(json.dumps({"spacing": [1, 1, 1]}))
    (gt / "b.json").write_text("{}")  # already there: kept
    fv = FinalValidation(tmp_path / "fold", gt, ".tif", None)
    assert fv.copy_gt_spacing_sidecars(raw) == 1
    assert json.loads((gt / "a.json").read_text()) == {"spacing": [1, 1, 1]} and (gt / "b.json").read_text() == "{}"
    assert fv.copy_gt_spacing_sidecars(raw) == 0
    assert FinalValidation(tmp_path / "fold", gt, ".nii.gz", None).copy_gt_spacing_sidecars(raw) == 0
    assert fv.copy_gt_spacing_sidecars(None) == 0


def test_score_failure_is_reported_not_raised(tmp_path) -> None:
    logs: list[str] = []
    fv = FinalValidation(tmp_path / "fold", tmp_path / "gt", ".tif", 2, log=lambda m, **_: logs.append(m))
    assert fv.score_or_report() is None  # no validation folder
    assert "is missing: VolumeError: validation folder" in logs[-1] and "nnunetv2_topo evaluate --input" in logs[-1]


# ---------------------------------------------------------------------- checkpoint payload
@pytest.mark.parametrize("trainer_cls", [nnUNetTrainerTopoWarmup, nnUNetTrainer_TopoBudget])
def test_checkpoint_holds_every_key_nnunet_writes(tmp_path, monkeypatch, trainer_cls) -> None:
    config = {"ema_decay": 0.9} if trainer_cls is nnUNetTrainerTopoWarmup else {}
    trainer = make_trainer(tmp_path, monkeypatch, trainer_cls, config)
    nnunet_file, ours_file = tmp_path / "nnunet.pth", tmp_path / "ours.pth"
    nnUNetTrainer.save_checkpoint(trainer, str(nnunet_file))  # nnU-Net's own method, read at test time
    trainer.save_checkpoint(str(ours_file))
    theirs, ours = load_checkpoint_file(nnunet_file), load_checkpoint_file(ours_file)
    assert set(theirs) <= set(ours), f"missing nnU-Net keys: {set(theirs) - set(ours)}"
    for key, value in theirs.items():
        if key in ("network_weights", "optimizer_state"):
            continue
        assert ours[key] == value, key
    assert set(ours["network_weights"]) == set(theirs["network_weights"])  # no _orig_mod./module. prefixes
    assert "topo_state" in ours and "config" in ours["topo_state"]
    if trainer_cls is nnUNetTrainerTopoWarmup:  # the average once, as network_weights; the raw ones beside it
        assert set(ours["raw_network_weights"]) == set(theirs["network_weights"])
        tensors = [v for v in ours["topo_state"]["weight_ema"].values() if isinstance(v, torch.Tensor)]
        assert ours["topo_state"]["weight_ema"] == {"decay": 0.9, "num_updates": 0} and not tensors


def test_collectives_are_plain_without_a_process_group() -> None:
    from nnunetv2_topo.trainers.distributed import (
        all_ranks,
        from_rank0,
        gather_objects,
        process_group_timeout,
        rank_and_world,
        reduce_term_means,
        wait_on_every_rank,
    )

    assert rank_and_world() == (0, 1) and process_group_timeout() is None
    assert all_ranks(True) and not all_ranks(False)
    assert gather_objects({"a": 1}) == [{"a": 1}] and from_rank0([3]) == [3]
    means = reduce_term_means([{"ce": 1.0, "dice": math.nan}, {"ce": 3.0}], ("ce", "dice"))
    assert means["ce"] == 2.0 and math.isnan(means["dice"])
    calls = iter([False, False, True])
    wait_on_every_rank(lambda: next(calls), poll_seconds=0.0)
    assert next(calls, "done") == "done"
