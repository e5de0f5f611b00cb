"""Checkpoint selection by the competition score (``score_every_epochs``) inside nnU-Net's own ``run_training`` loop:
real preprocessed validation cases, nnU-Net's sliding-window predictor, the exact metric in a spawned process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from trainer_fixtures import (
    fold_dir,
    log_text,
    make_trainer,
    noisy_validation_trainer,
    prepare_loop,
    write_score_dataset,
)

from nnunetv2_topo.scheduling import warmup_lr
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.trainers.config import TopoConfigError, check_consistency, resolve_config
from nnunetv2_topo.trainers.score_rounds import BEST_SCORE_CHECKPOINT, ScoreRound, mean_scores, select_score_cases

LoopTrainer = noisy_validation_trainer()

SCORED = {
    "optimizer": "sgd",  # SGD at 0.05 moves this noisy data's score up and down, so the plateau acts
    "loss_weights": {"ce": 1.0, "dice": 1.0},
    "num_epochs": 6,
    "num_iterations_per_epoch": 2,
    "num_val_iterations_per_epoch": 1,
    "warmup_epochs": 1,
    "initial_lr": 0.05,
    "plateau_metric": "val_score",
    "plateau_patience": 0,
    "plateau_factor": 0.5,
    "plateau_min_lr": 1e-5,
    # the plateau as torch's ReduceLROnPlateau defaults have it, which replay_rounds reproduces: no cooldown,
    # relative threshold, no final anneal, no early stop (the defaults' own behaviour is tested in test_schedule)
    "plateau_cooldown": 0,
    "plateau_threshold": 1e-4,
    "plateau_threshold_mode": "rel",
    "plateau_final_anneal": 0.0,
    "plateau_early_stop": False,
    "score_every_epochs": 1,
    "score_num_cases": 2,
    "seed": 0,
}


def _train(tmp_path, monkeypatch, config: dict, resume_from: str | None = None):
    prepare_loop(tmp_path)
    trainer = make_trainer(tmp_path, monkeypatch, LoopTrainer, config, resume=resume_from is not None)
    monkeypatch.setattr(trainer.logger, "plot_progress_png", lambda folder: None)
    monkeypatch.setattr(trainer, "write_diagnostics", lambda: None)
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
    trainer.run_training()  # nnU-Net's loop: on_train_start, epochs, on_train_end
    return trainer


def replay_rounds(records: list[dict], config: dict, num_epochs: int) -> list[float]:
    """The LR of every epoch when torch's ``ReduceLROnPlateau(mode="max")`` is stepped with each round's score
    after the epoch the round was applied at (rounds of warmup epochs not counted)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config["initial_lr"])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=config["plateau_factor"], patience=config["plateau_patience"],
        min_lr=config["plateau_min_lr"],
    )  # fmt: skip
    lrs = []
    for epoch in range(num_epochs):
        if epoch < config["warmup_epochs"]:
            lrs.append(warmup_lr(config["initial_lr"], epoch, config["warmup_epochs"]))
        else:
            lrs.append(opt.param_groups[0]["lr"])
        for r in records:
            if r["applied_epoch"] == epoch and r["epoch"] >= config["warmup_epochs"]:
                plateau.step(r["score"])
    return lrs


@pytest.mark.e2e
def test_rounds_log_the_score_keep_the_best_checkpoint_and_drive_the_plateau(tmp_path, monkeypatch) -> None:
    # noisy validation images: the score goes up and down, so the plateau acts
    val_keys = write_score_dataset(tmp_path, num_cases=4, val_cases=3, noise=2.0)
    trainer = _train(tmp_path, monkeypatch, SCORED)
    log = trainer.logger.local_logger.my_fantastic_logging
    records = trainer.score_rounds.records

    # a round every epoch, applied when the next one is due (the last one awaited at the end of training)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r["applied_epoch"] for r in records] == [1, 2, 3, 4, 5, 5]
    assert all(r["error"] is None and r["num_cases"] == 2 for r in records)
    _assert_logged_at_round_epochs(log, records, SCORED["num_epochs"])
    assert trainer.score_cases() == select_score_cases(val_keys, 2)

    # checkpoint_best_score.pth: the weights of the best round, in nnU-Net's layout
    best = max(records, key=lambda r: r["score"])
    assert trainer.score_rounds.best_score == best["score"] and trainer.score_rounds.best_score_epoch == best["epoch"]
    ckpt = torch.load(fold_dir(tmp_path) / BEST_SCORE_CHECKPOINT, map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == best["epoch"] + 1
    assert ckpt["trainer_name"] == "nnUNetTrainerTopoWarmup" and set(ckpt["network_weights"]) == set(
        trainer.network.state_dict()
    )

    # the plateau follows the scores, once per round: ReduceLROnPlateau(mode="max") replayed on them
    lrs = log["lrs"]
    assert lrs == pytest.approx(replay_rounds(records, SCORED, SCORED["num_epochs"]), rel=1e-12)
    assert trainer.lr_scheduler.num_plateau_steps == 5  # the round of the warmup epoch is not counted
    assert sum(b < a for a, b in zip(lrs, lrs[1:])) >= 1, f"the plateau never acted ({lrs}): a vacuous replay"
    # the data tell the score apart from the epoch number (what a plateau stepped by nnU-Net's hook would see)
    assert replay_rounds([{**r, "score": float(r["epoch"])} for r in records], SCORED, 6) != pytest.approx(lrs)
    text = log_text(fold_dir(tmp_path))
    assert "predicted 2 validation cases in" in text and "in the training process" in text
    assert f"Competition score of epoch {best['epoch']}" in text

    # nnU-Net's predictor, loaded from checkpoint_best_score.pth, reproduces the best round's score
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_topo.metrics import leaderboard_score
    from nnunetv2_topo.trainer_discovery import trainer_folder

    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_folder()))
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"))
    predictor.initialize_from_trained_model_folder(
        str(fold_dir(tmp_path).parent), use_folds=(0,), checkpoint_name=BEST_SCORE_CHECKPOINT
    )
    dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, trainer.score_cases())
    scores = []
    for key in trainer.score_cases():
        data, seg, _, properties = dataset.load_case(key)
        logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.array(data[:])))
        pred = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, trainer.plans_manager, trainer.configuration_manager, trainer.label_manager, properties
        )
        scores.append(leaderboard_score(pred, np.array(seg[:])[0], workers=0))
    assert mean_scores(scores)["score"] == pytest.approx(best["score"], abs=1e-9)

    # --c (rounds every 2 epochs from now on): rounds, best score and the plateau continue
    more = {**SCORED, "num_epochs": 9, "score_every_epochs": 2, "allow_config_change": True}
    resumed = _train(tmp_path, monkeypatch, more, resume_from=str(fold_dir(tmp_path) / "checkpoint_final.pth"))
    assert [r["epoch"] for r in resumed.score_rounds.records] == [0, 1, 2, 3, 4, 5, 7]
    assert resumed.score_rounds.records[:6] == records
    new_best = max(resumed.score_rounds.records, key=lambda r: r["score"])
    rounds = resumed.score_rounds
    assert rounds.best_score == new_best["score"] and rounds.best_score_epoch == new_best["epoch"]
    resumed_log = resumed.logger.local_logger.my_fantastic_logging
    assert resumed_log["val_score"][:6] == pytest.approx(log["val_score"], nan_ok=True)
    assert resumed_log["lrs"] == pytest.approx(replay_rounds(resumed.score_rounds.records, SCORED, 9), rel=1e-12)
    _assert_logged_at_round_epochs(resumed_log, resumed.score_rounds.records, 9)  # NaN at epochs 6 and 8


def _assert_logged_at_round_epochs(log: dict, records: list[dict], num_epochs: int) -> None:
    """``val_score`` (and its parts) at the epoch whose weights a round scored, NaN at every other epoch."""
    assert len(log["val_score"]) == num_epochs
    for epoch, value in enumerate(log["val_score"]):
        scored = [r for r in records if r["epoch"] == epoch]
        if scored:
            assert value == scored[0]["score"] and 0.0 <= value <= 1.0
            assert log["val_score_topo"][epoch] == scored[0]["topo"]
            assert log["val_score_voi"][epoch] == scored[0]["voi_score"]
        else:
            assert math.isnan(value) and math.isnan(log["val_score_surface_dice"][epoch])


def test_failed_case_leaves_nan_and_does_not_step(tmp_path, monkeypatch) -> None:
    from concurrent.futures import Future

    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**SCORED, "warmup_epochs": 0})
    trainer.current_epoch = 1
    trainer.epoch_log.pad(trainer.current_epoch)
    failed: Future = Future()
    failed.set_exception(MemoryError("no memory"))
    trainer.score_rounds.pending = ScoreRound(1, ["a"], {}, futures=[failed])
    steps = trainer.lr_scheduler.num_plateau_steps
    trainer.score_rounds.apply(trainer.score_rounds.pending.record(applied_epoch=1), trainer.round_hooks())
    assert math.isnan(trainer.logger.get_value("val_score", 1))
    assert trainer.lr_scheduler.num_plateau_steps == steps and trainer.score_rounds.best_score is None
    assert "MemoryError: no memory" in log_text(fold_dir(tmp_path))


def test_more_cases_than_the_fold_warns_and_scores_all(tmp_path, monkeypatch) -> None:
    val_keys = write_score_dataset(tmp_path, num_cases=3, val_cases=2)
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**SCORED, "score_num_cases": 5})
    assert trainer.score_cases() == sorted(val_keys)
    assert "score_num_cases = 5 but fold 0 has only 2 validation cases" in log_text(fold_dir(tmp_path))


def test_case_subset_is_fixed_and_independent_of_the_order() -> None:
    keys = [f"c{i}" for i in range(10)]
    chosen = select_score_cases(keys, 4)
    assert chosen == select_score_cases(list(reversed(keys)), 4) and len(set(chosen)) == 4
    assert select_score_cases(keys[:3], 4) == keys[:3]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"score_every_epochs": -1}, r"'score_every_epochs' = -1 is invalid: must be >= 0"),
        ({"score_every_epochs": 2.5}, r"'score_every_epochs' = 2.5 is invalid: must be an integer"),
        ({"score_every_epochs": "5"}, r"'score_every_epochs' = '5' is invalid: must be an integer"),
        ({"score_num_cases": 0}, r"'score_num_cases' = 0 is invalid: must be >= 1"),
        ({"score_num_cases": 1.5}, r"'score_num_cases' = 1.5 is invalid: must be an integer"),
        ({"score_mirroring": "yes"}, r"'score_mirroring' = 'yes' is invalid: must be true or false"),
        ({"plateau_metric": "val_scor"}, r"'plateau_metric' = 'val_scor' is invalid: must be one of .*val_score"),
        ({"score_case_timeout_s": 0}, r"'score_case_timeout_s' = 0 is invalid: must be > 0"),
        ({"score_case_timeout_s": "never"}, r"'score_case_timeout_s' = 'never' is invalid: must be a number"),
    ],
)
def test_bad_score_keys(overrides: dict, match: str) -> None:
    with pytest.raises(TopoConfigError, match=match):
        resolve_config(overrides, source="cfg.yaml")


def test_val_score_plateau_needs_scoring_rounds(tmp_path, monkeypatch) -> None:
    config = resolve_config({"plateau_metric": "val_score"}, source="cfg.yaml")
    with pytest.raises(TopoConfigError, match=r"cfg.yaml: plateau_metric = 'val_score' needs scoring rounds, but "
                       r"score_every_epochs = 0 \(off\)\. Set score_every_epochs >= 1"):  # fmt: skip
        check_consistency(config, "cfg.yaml")
    with pytest.raises(TopoConfigError, match="needs scoring rounds"):  # at trainer start-up, too
        make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {"plateau_metric": "val_score"}, initialize=False)
    ok = {"plateau_metric": "val_score", "score_every_epochs": 5, "num_epochs": 3, "warmup_epochs": 1}
    ok = resolve_config(ok, source="c")
    assert check_consistency(ok, "c") == ["score_every_epochs = 5 > num_epochs = 3: no scoring round runs"]


def test_a_pending_round_is_awaited_only_before_checkpoint_latest(tmp_path, monkeypatch) -> None:
    """The loop does not wait for a round still being scored, except before nnU-Net writes checkpoint_latest.pth
    (so --c never loses a round) or when the next round is due."""
    import threading
    from concurrent.futures import Future

    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**SCORED, "score_every_epochs": 3})
    trainer.save_every = 2  # nnU-Net writes checkpoint_latest.pth after epochs 1, 3, ...
    future: Future = Future()
    trainer.score_rounds.pending = ScoreRound(0, ["a"], {}, futures=[future])
    trainer.current_epoch = 0
    trainer.epoch_log.pad(trainer.current_epoch)
    trainer._score_rounds_epoch_end()  # epoch 0: neither due: not awaited
    assert trainer.score_rounds.records == [] and trainer.score_rounds.pending is not None
    result = {"score": 0.5, "topo": 0.4, "surface_dice": 0.6, "voi_score": 0.7, "seconds": 0.1}
    threading.Timer(0.3, future.set_result, args=(result,)).start()
    trainer.current_epoch = 1
    trainer.epoch_log.pad(trainer.current_epoch)
    trainer._score_rounds_epoch_end()  # epoch 1: checkpoint_latest follows: awaited
    assert [(r["epoch"], r["applied_epoch"], r["score"]) for r in trainer.score_rounds.records] == [(0, 1, 0.5)]
    assert trainer.logger.get_value("val_score", 0) == 0.5 and math.isnan(trainer.logger.get_value("val_score", 1))
    assert trainer.score_rounds.best_score == 0.5 and trainer.score_rounds.pending is None
    assert "Waiting for the competition scoring of epoch 0" in log_text(fold_dir(tmp_path))


def _fake_predict(cases: list[str]):
    for case in cases:  # the case name is the "ground-truth file" the test metrics read
        yield np.zeros((2, 2, 2), np.uint8), case


@pytest.mark.e2e
def test_a_case_that_never_finishes_fails_its_round_and_training_goes_on(tmp_path, monkeypatch) -> None:
    """A wedged case is killed at score_case_timeout_s on its rank: the round fails (NaN, not compared with the
    best, the plateau not stepped), the next round gets a new scoring process and training goes on."""
    from score_metrics import hang_on_hang

    config = {**SCORED, "warmup_epochs": 0, "score_case_timeout_s": 1}
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config)
    pool = trainer.score_rounds.pool
    assert pool.timeout_s == 1.0
    monkeypatch.setattr(pool, "metric", hang_on_hang)
    monkeypatch.setattr(trainer, "score_predictor", _fake_predict)
    rounds = iter([["case_a", "hang"], ["case_a", "case_b"], ["case_c"]])
    monkeypatch.setattr(trainer, "score_cases", lambda: next(rounds))
    steps = trainer.lr_scheduler.num_plateau_steps
    for epoch in range(3):  # a round every epoch: each awaits the previous one
        trainer.current_epoch = epoch
        trainer.epoch_log.pad(epoch)
        trainer._score_rounds_epoch_end()
    trainer.score_rounds.finish(2, trainer.round_hooks())
    records = trainer.score_rounds.records
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert "case hang ran past its deadline (score_case_timeout_s = 1 s)" in records[0]["error"]
    assert math.isnan(trainer.logger.get_value("val_score", 0))
    assert records[1]["error"] is None and records[1]["score"] == pytest.approx(0.15)
    assert (trainer.score_rounds.best_score, trainer.score_rounds.best_score_epoch) == (records[2]["score"], 2)
    assert trainer.lr_scheduler.num_plateau_steps == steps + 2  # the failed round is not a plateau step
    assert pool.workers_started == 2 and pool.pid is None  # replaced once; stopped at the end
    assert "the round is not compared with the best score" in log_text(fold_dir(tmp_path))


def test_the_best_is_compared_only_between_rounds_of_the_same_cases(tmp_path, monkeypatch) -> None:
    """A round of other cases (fewer after a change of score_num_cases on --c) is not compared with the best."""
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, SCORED)
    rounds = trainer.score_rounds
    parts = {"topo": 0.5, "surface_dice": 0.5, "voi_score": 0.5, "error": None}
    assert rounds.accept({**parts, "epoch": 0, "score": 0.6, "cases": ["a", "b", "c", "d"]})
    assert not rounds.accept({**parts, "epoch": 1, "score": 0.5, "cases": ["a", "b", "c", "d"]})
    assert rounds.accept({**parts, "epoch": 2, "score": 0.4, "cases": ["a", "b"]})  # not compared with 0.6
    assert (rounds.best_score, rounds.best_score_epoch, rounds.best_cases) == (0.4, 2, ["a", "b"])
    assert "The scored cases changed (4 -> 2 cases)" in log_text(fold_dir(tmp_path))
    assert not rounds.accept({**parts, "epoch": 3, "score": 0.3, "cases": ["a", "b"]})
    restored = type(rounds)(1)
    restored.load_state_dict(rounds.state_dict())
    assert restored.best_cases == ["a", "b"]


def test_progress_png_is_drawn_every_plot_every_epochs_and_after_the_last(tmp_path, monkeypatch) -> None:
    from nnunetv2_topo.trainers import topo_warmup

    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {**SCORED, "num_epochs": 23})
    drawn: list[int] = []
    monkeypatch.setattr(topo_warmup, "plot_progress_topo", lambda log, path: drawn.append(trainer.current_epoch - 1))
    for epoch in range(23):
        trainer.current_epoch = epoch + 1  # write_diagnostics runs after nnU-Net's on_epoch_end counted the epoch
        trainer.write_diagnostics()
    assert drawn == [0, 10, 20, 22]
    assert (fold_dir(tmp_path) / "progress_topo.json").is_file()  # the JSON: every epoch


def test_the_scoring_predictor_never_compiles_a_second_copy(tmp_path, monkeypatch) -> None:
    from nnunetv2_topo.evaluation.scoring_pool import threads_per_rank
    from nnunetv2_topo.trainers.weight_ema import unwrap_network

    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, SCORED)
    monkeypatch.setenv("nnUNet_compile", "true")  # as nnUNetv2_train with compilation has it
    wrapped: list = []
    monkeypatch.setattr(torch, "compile", lambda module, **_: wrapped.append(module) or torch.nn.Identity())
    predictor = trainer.score_predictor.sliding_window()
    assert predictor.network is unwrap_network(trainer.network)  # not a compiled copy (nor nnU-Net's wrapper)
    # logits -> segmentation and the scoring process use this rank's share of the cores, not all of them
    assert trainer.score_predictor.threads == threads_per_rank(1) == trainer.score_rounds.pool.threads
