"""progress_topo.png and ``nnunetv2_topo plot``: from progress_topo.json or a checkpoint, and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.trainers.diagnostics import finite_mean_max, load_progress, plot_progress_topo


def _log(epochs: int = 4, with_terms: bool = True) -> dict:
    log = {
        "train_losses": [1.0 - 0.1 * e for e in range(epochs)],
        "val_losses": [1.1 - 0.1 * e for e in range(epochs)],
        "lrs": [1e-3 * (e + 1) for e in range(epochs)],
        "mean_fg_dice": [0.1 * e for e in range(epochs)],
        "ema_fg_dice": [0.05 * e for e in range(epochs)],
        "dice_per_class_or_region": [[0.1 * e] for e in range(epochs)],
        "epoch_start_timestamps": [float(e) for e in range(epochs)],
        "epoch_end_timestamps": [e + 0.5 for e in range(epochs)],
    }
    if with_terms:
        for term in ("dice", "boundary"):
            log[f"train_loss_{term}"] = [0.5] * epochs
            log[f"val_loss_{term}"] = [0.6] * epochs
        log["grad_norm_mean"] = [1.0, 2.0, math.nan, 1.5][:epochs]
        log["grad_norm_max"] = [2.0, 4.0, math.nan, 3.0][:epochs]
        log["skipped_steps"] = [0, 0, 3, 0][:epochs]
    return log


def test_finite_mean_max() -> None:
    assert finite_mean_max([1.0, 3.0, math.nan, math.inf]) == (2.0, 3.0)
    assert all(math.isnan(v) for v in finite_mean_max([math.nan]))


def test_plot_writes_png(tmp_path: Path) -> None:
    out = plot_progress_topo(_log(), tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert not list(tmp_path.glob("*.tmp*"))


def test_scoring_rounds_are_drawn_as_points(tmp_path: Path, plotted_lines: list[dict]) -> None:
    drawn = plotted_lines
    plot_progress_topo({**_log(), "val_score": [math.nan, 0.4, math.nan, 0.6]}, tmp_path / "a.png")
    plot_progress_topo({**_log(), "val_score": [math.nan] * 4}, tmp_path / "b.png")
    plot_progress_topo(_log(), tmp_path / "c.png")
    label = "competition score (val_score)"
    assert drawn[0][label][1::2] == [0.4, 0.6] and all(math.isnan(v) for v in drawn[0][label][::2])
    assert label not in drawn[1] and label not in drawn[2]


def test_cli_redraws_from_progress_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "progress_topo.json").write_text(json.dumps(_log()))
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "progress_topo.png").stat().st_size > 20_000
    assert "4 epochs" in capsys.readouterr().out


def test_cli_falls_back_to_the_newest_checkpoint(tmp_path: Path) -> None:
    torch.save({"current_epoch": 2, "logging": _log(2, with_terms=False)}, tmp_path / "checkpoint_best.pth")
    torch.save({"current_epoch": 3, "logging": _log(3, with_terms=False)}, tmp_path / "checkpoint_latest.pth")
    log, source = load_progress(tmp_path)
    assert source.name == "checkpoint_latest.pth" and len(log["train_losses"]) == 3
    out = tmp_path / "other.png"
    assert main(["plot", str(tmp_path), "--output", str(out)]) == 0
    assert out.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "is not a folder"),
        ("empty", "has neither progress_topo.json nor a checkpoint"),
        ("no_epochs", "holds no finished epoch yet"),
        ("bad_out", "is a file, not a folder"),
    ],
)
def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture, setup: str, match: str) -> None:
    fold = tmp_path / "fold_0"
    args = ["plot", str(fold)]
    if setup != "missing":
        fold.mkdir()
    if setup == "no_epochs":
        (fold / "progress_topo.json").write_text(json.dumps({"train_losses": []}))
    if setup == "bad_out":
        (fold / "progress_topo.json").write_text(json.dumps(_log()))
        (tmp_path / "file").write_text("x")
        args += ["--output", str(tmp_path / "file" / "x.png")]
    assert main(args) == 2
    assert match in capsys.readouterr().err
