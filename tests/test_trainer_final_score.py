"""The final competition scoring is bounded (cores, free memory, ``final_score_workers``) and a failure says why
and how to score the folder afterwards."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from trainer_fixtures import fold_dir, log_text, make_trainer

from nnunetv2_topo.metrics import engine
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

GB = 1024**3


def test_workers_follow_cores_memory_and_the_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(engine, "available_memory_bytes", lambda: 20 * GB)
    trainer = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup)
    voxels_320 = 320**3  # a tile of 160³ needs ENGINE_BYTES_PER_VOXEL * 160³ (~4.6 GB)
    per_tile = engine.ENGINE_BYTES_PER_VOXEL * voxels_320 // 8
    workers = trainer.final_validation.workers
    assert workers(10, voxels_320) == int(20 * GB * 0.8) // per_tile == 3  # memory, not 16 cores
    assert trainer.final_validation.workers(1, voxels_320) == 0  # one case: serial in this process
    monkeypatch.setattr(engine, "available_memory_bytes", lambda: 512 * GB)
    assert trainer.final_validation.workers(10, voxels_320) == 16  # cores
    capped = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup, {"final_score_workers": 2})
    assert capped.final_validation.workers(10, voxels_320) == 2
    assert "Competition scoring of 10 cases with 2 Betti-matching workers" in log_text(fold_dir(tmp_path / "b"))


def test_failure_names_the_cause_and_the_command(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup)
    message = trainer.final_validation.report_failure(BrokenProcessPool("A child process terminated abruptly"))
    val = fold_dir(tmp_path) / "validation"
    gt = tmp_path / "preprocessed" / "Dataset999_TrainerUnit" / "gt_segmentations"
    assert f"{val / 'summary_topo.json'} is missing: BrokenProcessPool: A child process terminated abruptly" in message
    assert "most likely out of memory: lower final_score_workers" in message
    assert f"nnunetv2_topo evaluate --input {val} --gt {gt} --only-predicted" in message
    assert message in log_text(fold_dir(tmp_path))
