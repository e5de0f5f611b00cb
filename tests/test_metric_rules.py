"""The Betti-matching rules for binary tiles against the Betti-Matching-3D engine (the oracle), the fallback past
the rules' bound, the engine choice everywhere it is offered, and the metric from a plain script."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from betti_families import FIRST, SECOND, random_pair

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.metrics import leaderboard_score, topo_score
from nnunetv2_topo.metrics.engine import engine_counts
from nnunetv2_topo.metrics.jit_cache import CACHE_ENV, numba_cache_dir
from nnunetv2_topo.metrics.leaderboard import combine_score
from nnunetv2_topo.metrics.topo_score import rules_tile_counts, tile_counts

REPO = Path(__file__).resolve().parents[1]
PAIRS = 2500


def test_rules_equal_engine_on_random_families() -> None:
    """2,500 seeded pairs, 4-16 voxels per axis (sizes 1-2 on an axis, transposed, empty and full tiles included):
    every count of the rules (unbounded) equals the engine's."""
    rng = np.random.default_rng(20261129)
    seen: collections.Counter = collections.Counter()
    mismatches = []
    for _ in range(PAIRS):
        pred, gt, name = random_pair(rng, 4, 16)
        want = engine_counts(pred, gt)
        got = tile_counts(pred, gt, engine="rules")
        if not np.array_equal(got, want):
            mismatches.append((name, pred.shape, got.tolist(), want.tolist()))
        seen.update(name.split("/")[:2])
        seen.update({"thin axis"} if min(pred.shape) <= 2 else set())
        seen.update({"transposed"} if name.endswith("/T") else set())
        seen.update(f"m{k}>0" for k in range(3) if want[k, 0] > 0)
    assert mismatches == [], mismatches[:5]
    for key in (*FIRST, *SECOND, "thin axis", "transposed", "m0>0", "m1>0", "m2>0"):
        assert seen[key] >= 10, (key, seen)


def _noise_pair(shape=(12, 11, 10), seed=3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape) < 0.5, rng.random(shape) < 0.5


def test_tile_counts_every_engine_gives_the_engines_counts() -> None:
    pred, gt = _noise_pair()
    want = engine_counts(pred, gt)
    assert want[1, 0] > 0  # matched tunnels: the m_1 reduction does real work here
    for engine in ("auto", "rules", "betti-matching-3d"):
        got = tile_counts(pred, gt, engine=engine)
        assert got.dtype == np.int64 and got.shape == (3, 3)
        assert got.tolist() == want.tolist(), engine
    empty = np.zeros((5, 6, 7), bool)
    assert tile_counts(empty, gt[:5, :6, :7]).tolist() == engine_counts(empty, gt[:5, :6, :7]).tolist()
    assert tile_counts(np.zeros((0, 3, 3), bool), np.zeros((0, 3, 3), bool)).tolist() == [[0] * 3] * 3


def test_auto_falls_back_to_the_engine_past_the_bound(monkeypatch) -> None:
    ts = sys.modules["nnunetv2_topo.metrics.topo_score"]  # the package re-exports a function of that name

    pred, gt = _noise_pair()
    assert rules_tile_counts(pred, gt) is not None
    monkeypatch.setattr(ts, "RULES_MAX_STEPS_PER_VOXEL", 0)
    assert rules_tile_counts(pred, gt) is None  # past the bound: no answer from the rules
    assert rules_tile_counts(pred, gt, bounded=False) is not None
    assert tile_counts(pred, gt, engine="auto").tolist() == engine_counts(pred, gt).tolist()
    monkeypatch.setattr(ts, "RULES_MAX_STEPS_PER_VOXEL", 32)
    monkeypatch.setattr(ts, "RULES_MAX_STORED_PER_VOXEL", 0)
    assert rules_tile_counts(pred, gt) is None  # too many stored column entries: also the engine's tile


def _write_pairs(tmp_path: Path) -> tuple[Path, Path]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for i in range(2):
        pred, gt = _noise_pair((20, 18, 16), seed=10 + i)
        write_tiff(pred_dir / f"{i}.tif", pred.astype(np.uint8))
        write_tiff(gt_dir / f"{i}.tif", gt.astype(np.uint8))
    return pred_dir, gt_dir


def test_evaluate_reports_fallback_tiles_and_stays_exact(tmp_path, monkeypatch, capsys) -> None:
    ts = sys.modules["nnunetv2_topo.metrics.topo_score"]  # the package re-exports a function of that name

    pred_dir, gt_dir = _write_pairs(tmp_path)
    oracle = evaluate_folders(pred_dir, gt_dir, num_processes=0, progress=False, engine="betti-matching-3d")
    rules = evaluate_folders(pred_dir, gt_dir, num_processes=2, progress=False)
    assert rules["cases"] == oracle["cases"]
    assert rules["fallback_tiles"] == {"total": 0, "cases": {"0": 0, "1": 0}}
    monkeypatch.setattr(ts, "RULES_MAX_STEPS_PER_VOXEL", 0)
    fell = evaluate_folders(pred_dir, gt_dir, num_processes=0, progress=False)
    assert fell["cases"] == oracle["cases"]
    assert fell["fallback_tiles"] == {"total": 16, "cases": {"0": 8, "1": 8}}
    assert main(["evaluate", "--input", str(pred_dir), "--gt", str(gt_dir), "-np", "0", "--quiet"]) == 0
    assert "16 tile(s) fell back to the Betti-Matching-3D engine" in capsys.readouterr().out


def test_leaderboard_score_engines_agree() -> None:
    pred, gt = _noise_pair((20, 18, 16), seed=5)
    oracle = leaderboard_score(pred, gt, workers=0, engine="betti-matching-3d")
    assert leaderboard_score(pred, gt) == oracle
    assert leaderboard_score(pred, gt, workers=0, engine="rules") == oracle
    assert topo_score(pred, gt, engine="rules") == oracle["topo"]


def test_bad_engine_names_the_choices(tmp_path, capsys) -> None:
    pred, gt = _noise_pair()
    msg = "engine must be one of 'auto', 'rules', 'betti-matching-3d', got 'fast'"
    with pytest.raises(ValueError, match=msg):
        tile_counts(pred, gt, engine="fast")
    with pytest.raises(ValueError, match=msg):
        leaderboard_score(pred, gt, engine="fast")
    with pytest.raises(ValueError, match=msg):
        evaluate_folders(tmp_path, tmp_path, engine="fast")
    with pytest.raises(ValueError, match="workers must be None or >= 0, got -1"):
        leaderboard_score(pred, gt, workers=-1)
    with pytest.raises(ValueError, match="two 3-D tiles of equal shape"):
        tile_counts(pred, gt[:, :, :5])
    with pytest.raises(SystemExit):
        main(["evaluate", "--input", str(tmp_path), "--gt", str(tmp_path), "--engine", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_combine_score_weights_and_clipping() -> None:
    assert combine_score(1.0, 1.0, 1.0) == pytest.approx(1.0, abs=1e-15)
    assert combine_score(0.5, 0.2, 0.4) == pytest.approx(0.3 * 0.5 + 0.35 * 0.2 + 0.35 * 0.4, abs=1e-15)
    assert combine_score(2.0, 2.0, 2.0) == 1.0
    assert combine_score(-1.0, 0.0, 0.0) == 0.0


def test_numba_cache_dir_choice(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert numba_cache_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # cannot be created: falls back to the temp folder
    fallback = numba_cache_dir()
    assert fallback.is_dir() and fallback.name.startswith("nnunetv2_topo-numba")
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_cache_dir() == tmp_path / "xdg" / "nnunetv2_topo" / "numba"


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
@pytest.mark.e2e
def test_plain_script_without_main_guard(tmp_path, start_method) -> None:
    """A script with no ``if __name__ == "__main__":`` guard, under any start method: engine worker processes do
    not re-run it (they used to, and died with BrokenProcessPool)."""
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing
            import numpy as np
            from nnunetv2_topo.metrics import leaderboard_score
            multiprocessing.set_start_method({start_method!r})
            rng = np.random.default_rng(5)
            pred, gt = rng.random((20, 18, 16)) < 0.5, rng.random((20, 18, 16)) < 0.5
            print("SCRIPT RAN")
            print(leaderboard_score(pred, gt, workers=2, engine="betti-matching-3d")["score"])
            print(leaderboard_score(pred, gt)["score"])
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    assert lines.count("RAN") == 1  # the script ran once, in its own process only
    rng = np.random.default_rng(5)
    pred, gt = rng.random((20, 18, 16)) < 0.5, rng.random((20, 18, 16)) < 0.5
    want = leaderboard_score(pred, gt, workers=0)["score"]
    assert [float(x) for x in lines[-2:]] == [want, want]
