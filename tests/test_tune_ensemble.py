"""``tune`` chooses the ensemble (weights, fusion, checkpoints) with the steps, and says how sure each choice is:
the search on tiny cases with a known answer, the bootstrap and cross-validation on hand-made score tables, the
postprocess.json fields and how postprocess and predict read them, and every bad new flag."""

from __future__ import annotations

import json
import re
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import read_volume, write_tiff
from nnunetv2_topo.postprocessing import PostprocessConfig
from nnunetv2_topo.postprocessing.config_file import (
    FusionSpec,
    PostprocessFile,
    load_postprocess_file,
    parse_postprocess_dict,
    save_postprocess_file,
)
from nnunetv2_topo.tuning import stability
from nnunetv2_topo.tuning.ensemble import EnsembleSpace, Setting, simplex_grid, weight_options
from nnunetv2_topo.tuning.evaluator import CaseSource, Evaluator
from tests.test_tune import TARGET, constructed_case

# ------------------------------------------------------------------ weights grid


def test_simplex_grid_and_weight_options() -> None:
    grid = simplex_grid(3, 4)
    assert len(grid) == 15 and all(abs(sum(w) - 1) < 1e-3 for w in grid)
    assert (1.0, 0.0, 0.0) in grid and (0.25, 0.25, 0.5) in grid
    options = weight_options((1.0, 1.0, 1.0), 4)
    assert (0.3333, 0.3333, 0.3333) in options  # equal weights: not on the grid of quarters
    assert (0.5, 0.5, 0.0) in options and (0.0, 0.0, 1.0) in options
    assert len(options) == len(set(options)) == 16
    # many models: one model's weight at a time, the others rescaled; the current point and equal weights kept
    few = weight_options((0.4, 0.2, 0.2, 0.2, 0.0), 4, max_options=10)
    assert (0.4, 0.2, 0.2, 0.2, 0.0) in few and (0.2, 0.2, 0.2, 0.2, 0.2) in few
    assert (0.0, 0.25, 0.25, 0.25, 0.25) not in few and (0.0, 0.3333, 0.3333, 0.3333, 0.0) in few
    assert all(abs(sum(w) - 1) < 1e-3 for w in few)


# ------------------------------------------------------------------ bootstrap and cross-validation


def test_bootstrap_interval_known_answers() -> None:
    assert stability.bootstrap_interval([0.1] * 5) == pytest.approx((0.1, 0.1))
    lo, hi = stability.bootstrap_interval([1.0, -1.0] * 10)
    assert lo < 0 < hi and lo == pytest.approx(-hi, abs=0.15)
    p = stability.paired([0.9, 0.8, 0.7], [0.5, 0.5, 0.5])
    assert p["per_case"] == pytest.approx([0.4, 0.3, 0.2]) and p["mean"] == pytest.approx(0.3)
    assert 0.2 - 1e-9 <= p["ci"][0] < p["ci"][1] <= 0.4 + 1e-9 and not p["includes_zero"]
    assert stability.paired([0.9, 0.1], [0.1, 0.9])["includes_zero"]
    with pytest.raises(ValueError, match="no differences"):
        stability.bootstrap_interval([])


def test_win_rate_rechooses_within_each_group() -> None:
    # group 0 has two settings (two thresholds), each best on half of the cases; group 1 is one setting
    scores = np.array([[0.9, 0.9, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9], [0.8, 0.8, 0.8, 0.8]])
    # per resample group 0 scores max(mean of row 0, mean of row 1): >= 0.8 (not beaten) unless the 4 draws split
    # 2/2 between the halves (probability 6/16): 10/16 wins; row 0 alone would win only with 3+ draws on a, b: 5/16
    assert stability.win_rate(scores, [0, 0, 1], chosen=0) == pytest.approx(10 / 16, abs=0.04)
    assert stability.win_rate(scores[[0, 2]], [0, 1], chosen=0) == pytest.approx(5 / 16, abs=0.04)
    assert stability.win_rate(scores[[0, 2]] + [[1], [0]], [0, 1], chosen=0) == 1.0  # beats it on every case
    assert stability.win_rate(np.ones((2, 3)), [0, 1], chosen=1) == 1.0  # a tie is not a defeat


def test_cross_validated_gain_by_hand() -> None:
    # cases a, b, c, d; folds {a, c} and {b, d}. Group 0 is best on a, c; group 1 on b, d.
    scores = np.array([[0.9, 0.6, 0.9, 0.6], [0.6, 0.8, 0.6, 0.8]])
    cv = stability.cross_validated_gain(scores, [0, 1], folds=2)
    # fold {a, c} chooses on b, d: group 1 first -> held out 0.6 - 0.9 = -0.3; fold {b, d}: group 0 -> 0.6 - 0.8
    assert cv["per_case"] == pytest.approx([-0.3, -0.2, -0.3, -0.2]) and cv["mean"] == pytest.approx(-0.25)
    assert cv["picks"] == [(1, 0), (0, 1)] and not cv["includes_zero"] and cv["ci"][1] < 0
    agree = stability.cross_validated_gain(np.array([[0.9] * 4, [0.5] * 4]), [0, 1], folds=2)
    assert agree["mean"] == pytest.approx(0.4) and agree["ci"] == pytest.approx([0.4, 0.4])
    assert stability.cross_validated_gain(scores[:, :1], [0, 1]) is None  # one case


# ------------------------------------------------------------------ the search, known answer


def _weak_map(good: np.ndarray) -> np.ndarray:
    """Misses the sheets (p 0.01 where the good map is confident): with an equal vote the fused sheets drop below
    every threshold of the grid, so any ensemble that gives it a vote loses them."""
    weak = good.copy()
    weak[good > 0.2] = 0.01
    return weak


def _npz(path: Path, p1: np.ndarray) -> None:
    np.savez_compressed(path, probabilities=np.stack([1 - p1, p1]))


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Inputs: a model folder whose final checkpoint is weak and whose best-score checkpoint is good; a folder of
    good maps; a folder of weak maps. Known answer: score 1 needs the weak maps out of the vote."""
    root = tmp_path_factory.mktemp("ensemble")
    model = root / "Dataset001_X" / "T__P__3d_fullres"
    dirs = {k: root / k for k in ("good", "weak", "gt")}
    for d in dirs.values():
        d.mkdir()
    for i in range(2):
        prob, gt = constructed_case(i)
        fold = model / f"fold_{i}"
        for sub, p in (("validation", _weak_map(prob)), ("validation_best_score", prob)):
            (fold / sub).mkdir(parents=True)
            _npz(fold / sub / f"c{i}.npz", p)
        tifffile.imwrite(dirs["good"] / f"c{i}.tif", prob)
        tifffile.imwrite(dirs["weak"] / f"c{i}.tif", _weak_map(prob))
        write_tiff(dirs["gt"] / f"c{i}.tif", gt)
    return {"model": model, **dirs, "root": root}


@pytest.fixture(scope="module")
def tuned_ensemble(three_models: dict) -> tuple[Path, str]:
    out = three_models["root"] / "out" / "postprocess.json"
    out.parent.mkdir()
    argv = ["tune", "--input", str(three_models["good"]), "--input", str(three_models["weak"])]
    argv += ["--input", str(three_models["model"]), "--gt", str(three_models["gt"]), "--output", str(out)]
    assert main([*argv, "-np", "0", "--quiet", "--weight-grid", "2"]) == 0
    return out, (out.parent / "tune_report.md").read_text()


def test_weak_model_gets_no_vote_and_the_good_checkpoint_is_chosen(tuned_ensemble, three_models) -> None:
    out, _ = tuned_ensemble
    pf = load_postprocess_file(out)
    assert pf.measured["score_tuned"] == pytest.approx(1.0)
    assert pf.measured["score_default"] < 0.8  # equal weights, default steps
    weights = pf.fusion.weights
    assert weights[1] == 0  # the weak folder
    assert pf.fusion.inputs == tuple(str(three_models[k]) for k in ("good", "weak", "model"))
    assert pf.fusion.checkpoints[:2] == (None, None)
    # the model folder: its final checkpoint is weak; it takes part only with the best-score one
    assert weights[2] == 0 or pf.fusion.checkpoints[2] == "checkpoint_best_score.pth"
    assert pf.steps.threshold == TARGET
    assert pf.measured["ensemble_search"] == ["weights", "fusion", "checkpoint of input 3"]


def test_checkpoint_search_picks_the_best_score_checkpoint(three_models, tmp_path: Path) -> None:
    out = tmp_path / "pp.json"
    argv = ["tune", "--input", str(three_models["model"]), "--gt", str(three_models["gt"]), "--output", str(out)]
    assert main([*argv, "-np", "0", "--quiet"]) == 0
    pf = load_postprocess_file(out)
    assert pf.fusion.checkpoints == ("checkpoint_best_score.pth",) and pf.fusion.weights is None
    assert pf.measured["score_tuned"] == pytest.approx(1.0) and pf.measured["ensemble_search"] == [
        "checkpoint of input 1"
    ]
    # fixed by --checkpoints: the final (weak) one, nothing of the ensemble searched
    assert main([*argv, "-np", "0", "--quiet", "--overwrite", "--checkpoints", "checkpoint_final.pth"]) == 0
    pf = load_postprocess_file(out)
    assert pf.fusion.checkpoints == ("checkpoint_final.pth",) and pf.measured["ensemble_search"] == []
    assert pf.measured["score_tuned"] < 0.9


def test_report_gives_intervals_win_rates_and_the_ablation_of_each_model(tuned_ensemble) -> None:
    out, md = tuned_ensemble
    measured = load_postprocess_file(out).measured
    rows = {r["axis"]: r for r in measured["stability"]}
    assert {"weights", "checkpoint of input 3", "threshold", "min_component_size"} <= set(rows)
    assert ("fusion" in rows) == (sum(w > 0 for w in load_postprocess_file(out).fusion.weights) > 1)
    w = rows["weights"]
    assert w["difference"]["mean"] >= 0 and len(w["difference"]["per_case"]) == 2
    lo, hi = w["difference"]["ci"]
    assert lo <= w["difference"]["mean"] <= hi and 0 <= w["win_rate"] <= 1
    assert w["cross_validated"] is not None and len(w["cross_validated"]["per_case"]) == 2
    assert "## How sure is each choice" in md and "| weights |" in md and "Per-case paired differences" in md
    # dust 500 and 64 keep the same sheets and drop the same dust: a tie, marked as such
    dust = next(line for line in md.splitlines() if line.startswith("| min_component_size |"))
    assert dust.endswith("| *tie* |")
    from nnunetv2_topo.tuning.report import _mark

    assert _mark(stability.paired([0.9, 0.1], [0.1, 0.9]), None) == "**within noise**"
    assert _mark(stability.paired([0.9, 0.8], [0.1, 0.2]), None) == ""
    cv_noisy = stability.cross_validated_gain(np.array([[0.9, 0.6, 0.9, 0.6], [0.6, 0.8, 0.6, 0.8]]), [0, 1])
    assert cv_noisy["ci"][1] < 0  # chosen on one fold, the other value wins on the other
    assert _mark(stability.paired([0.9, 0.8], [0.1, 0.2]), cv_noisy) == "**reversed held-out**"
    assert "gain over default" in md and "95 % interval" in md
    for row in measured["without_model"]:  # only models that take part
        assert load_postprocess_file(out).fusion.weights[row["index"]] > 0


def test_postprocess_reads_the_chosen_ensemble(tuned_ensemble, three_models, capsys) -> None:
    """Weight-0 inputs are not read (a missing folder is fine); a model folder gives the chosen checkpoint's maps;
    the result equals the file's tuned steps on the fused maps."""
    out, _ = tuned_ensemble
    pf = load_postprocess_file(out)
    root = three_models["root"]
    inputs = [three_models["good"], root / "no_such_folder", three_models["model"]]
    dest = root / "pp"
    assert main(["postprocess", *sum((["--input", str(p)] for p in inputs), []), "--config", str(out),
                 "--output", str(dest)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "no_such_folder: fusion weight 0 (left out of the ensemble): not read" in text
    from nnunetv2_topo.postprocessing import fuse_probability_files, postprocess_volume

    for i in range(2):
        maps = [three_models["good"] / f"c{i}.tif"]
        if pf.fusion.weights[2] > 0:
            maps.append(three_models["model"] / f"fold_{i}" / "validation_best_score" / f"c{i}.npz")
        used = [w for w in pf.fusion.weights if w > 0]
        want = postprocess_volume(fuse_probability_files(maps, used, pf.fusion.mode), pf.steps)
        assert np.array_equal(read_volume(dest / f"c{i}.tif"), want)
        assert np.array_equal(want, constructed_case(i)[1] == 1)  # the exact answer


def test_evaluator_fuses_as_postprocess_does(three_models) -> None:
    from nnunetv2_topo.postprocessing import fuse_probability_files
    from nnunetv2_topo.tuning.evaluator import _Case

    good, weak = three_models["good"] / "c0.tif", three_models["weak"] / "c0.tif"
    final = three_models["model"] / "fold_0" / "validation" / "c0.npz"
    best = three_models["model"] / "fold_0" / "validation_best_score" / "c0.npz"
    source = CaseSource(
        "c0", (good, weak, final), three_models["gt"] / "c0.tif",
        variants=((), (), (("checkpoint_final.pth", final), ("checkpoint_best_score.pth", best))),
    )  # fmt: skip
    case = _Case(source)
    for mode in ("logit", "prob"):
        spec = FusionSpec(mode, (0.2, 0.3, 0.5), ("g", "w", "m"), (None, None, "checkpoint_best_score.pth"))
        want = fuse_probability_files([good, weak, best], (0.2, 0.3, 0.5), mode)
        assert np.array_equal(case.probability(spec), want)
    assert len(case.maps) == 3  # each map read once
    with pytest.raises(ValueError, match="input 3 has no checkpoint checkpoint_x.pth"):
        case.probability(FusionSpec("logit", (1, 1, 1), ("g", "w", "m"), (None, None, "checkpoint_x.pth")))


def test_fixed_weights_search_only_the_fusion(three_models, tmp_path: Path) -> None:
    from nnunetv2_topo.tuning import tune

    src = [
        CaseSource(f"c{i}", (three_models["good"] / f"c{i}.tif", three_models["weak"] / f"c{i}.tif"),
                   three_models["gt"] / f"c{i}.tif") for i in range(2)
    ]  # fmt: skip
    fusion = FusionSpec("logit", (1.0, 1.0), ("good", "weak"))
    space = EnsembleSpace(weights=False, fusion=True)
    with Evaluator(src, num_processes=0) as ev:
        assert ev.key(PostprocessConfig()) == Setting(FusionSpec("logit", None, tuple(str(p) for p in src[0].inputs)),
                                                      PostprocessConfig())  # fmt: skip
    outcome = tune(src, tmp_path / "pp.json", fusion, num_processes=0, progress=False, ensemble=space, max_rounds=1)
    assert outcome.fusion.weights == (1.0, 1.0)
    assert outcome.summary["ensemble_search"] == ["fusion"]


# ------------------------------------------------------------------ postprocess.json


def test_postprocess_file_round_trip_with_checkpoints(tmp_path: Path) -> None:
    pf = PostprocessFile(
        FusionSpec("prob", (0.5, 0.0, 0.5), ("a", "b", "c"), ("checkpoint_best_score.pth", None, "checkpoint_x.pth")),
        PostprocessConfig(threshold=0.35),
        {"stability": [{"axis": "weights", "win_rate": 0.9}]},
    )  # fmt: skip
    save_postprocess_file(tmp_path / "pp.json", pf)
    assert load_postprocess_file(tmp_path / "pp.json") == pf
    assert json.loads((tmp_path / "pp.json").read_text())["fusion"]["checkpoints"][1] is None
    assert pf.fusion.used == (True, False, True)
    # without checkpoints the key is not written (files of earlier releases read the same)
    save_postprocess_file(tmp_path / "old.json", PostprocessFile(FusionSpec("logit", None, ("a",))))
    assert "checkpoints" not in json.loads((tmp_path / "old.json").read_text())["fusion"]


@pytest.mark.parametrize(
    ("checkpoints", "message"),
    [
        ("checkpoint_final.pth", "checkpoints must be null or a list"),
        (["checkpoint_final.pth"], r"1 checkpoint\(s\) for 2 input\(s\)"),
        (["best.pt", None], "'best.pt' is not a checkpoint file name"),
        (["checkpoint_.pth", None], "'checkpoint_.pth' is not a checkpoint file name"),
        ([3, None], "3 is not a checkpoint file name"),
    ],
)
def test_postprocess_file_bad_checkpoints(checkpoints, message) -> None:
    d = {"version": 1, "fusion": {"mode": "logit", "inputs": ["a", "b"], "checkpoints": checkpoints}}
    with pytest.raises(ValueError, match=r"pp.json: key 'fusion': .*" + message):
        parse_postprocess_dict(d, "pp.json")


# ------------------------------------------------------------------ predict reads the chosen ensemble


def _model_folder(root: Path, *checkpoints: str) -> Path:
    """What ``check_model_folders`` reads (no weights are loaded here): dataset.json, plans.json, fold_0/<ckpt>."""
    root.mkdir(parents=True)
    labels = {"background": 0, "surface": 1, "ignore": 2}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels}))
    (root / "plans.json").write_text("{}")
    (root / "fold_0").mkdir()
    for name in checkpoints:
        (root / "fold_0" / name).write_bytes(b"")
    return root


def test_predict_loads_the_chosen_checkpoints_and_skips_weight_zero(tmp_path: Path, capsys) -> None:
    from nnunetv2_topo.cli.model_options import resolve_models
    from nnunetv2_topo.inference.fusion_settings import FusionSettingsError

    a = _model_folder(tmp_path / "m1", "checkpoint_final.pth", "checkpoint_best_score.pth")
    b = _model_folder(tmp_path / "m2", "checkpoint_final.pth")
    config = PostprocessFile(FusionSpec("prob", (0.7, 0.0, 0.3), ("a", "x", "b"),
                                        ("checkpoint_best_score.pth", "checkpoint_nope.pth", None)))  # fmt: skip
    args = Namespace(model=[a, tmp_path / "missing", b], folds=None, checkpoint=None, weights=None, fusion=None,
                     config=tmp_path / "pp.json")  # fmt: skip
    folders, mode, weights = resolve_models(args, config)
    assert [f.path for f in folders] == [a, b] and weights == (0.7, 0.3) and mode == "prob"
    assert [f.checkpoint for f in folders] == ["checkpoint_best_score.pth", "checkpoint_final.pth"]
    assert "missing: fusion weight 0 (left out of the ensemble): not loaded" in capsys.readouterr().err
    args.checkpoint = "checkpoint_final.pth"  # --checkpoint wins, and says so
    folders, _, _ = resolve_models(args, config)
    assert [f.checkpoint for f in folders] == ["checkpoint_final.pth"] * 2
    assert "--checkpoint checkpoint_final.pth overrides fusion.checkpoints" in capsys.readouterr().err
    args.checkpoint, args.model, args.weights = None, [a, b], [1.0, 1.0]
    with pytest.raises(FusionSettingsError, match=r"tuned on 3 input\(s\) \(a, x, b\); give --model 3 time\(s\)"):
        resolve_models(args, config)


# ------------------------------------------------------------------ bad CLI input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weight-grid", "0"], "--weight-grid must be an integer from 1 to 20, got 0"),
        (["--weight-grid", "21"], "--weight-grid must be an integer from 1 to 20, got 21"),
        (["--weight-grid", "2", "--weights", "1", "1", "1"], "--weight-grid sets the grid .* drop one of the two"),
        (["--checkpoints", "all"], r"1 --checkpoints for 3 --input\(s\)"),
        (["--checkpoints", "all", "all", "best.pt"], "--checkpoints best.pt: .*not a checkpoint file name"),
        (["--checkpoints", "checkpoint_final.pth", "all", "all"], "good is not a model folder .*give 'all'"),
        (["--checkpoints", "all", "all", "checkpoint_best.pth"], r"no fold_\*/validation_best/ .*checkpoint_final.pth"),
    ],
)
def test_cli_bad_ensemble_flags(three_models, tmp_path: Path, capsys, extra, message) -> None:
    out = tmp_path / "pp.json"
    argv = ["tune", "--input", str(three_models["good"]), "--input", str(three_models["weak"]), "--input"]
    argv += [str(three_models["model"]), "--gt", str(three_models["gt"]), "--output", str(out), *extra]
    try:
        rc = main(argv)
        text = capsys.readouterr().err
    except SystemExit as exc:
        rc, text = exc.code, capsys.readouterr().err
    assert rc == 2 and re.search(message, text), text
    assert not out.exists()


def test_cli_checkpoint_without_every_case(three_models, tmp_path: Path, capsys) -> None:
    model = tmp_path / "M"
    shutil.copytree(three_models["model"], model)
    shutil.rmtree(model / "fold_1" / "validation_best_score")
    argv = ["tune", "--input", str(model), "--gt", str(three_models["gt"]), "--output", str(tmp_path / "pp.json")]
    assert main(argv) == 2
    assert "out-of-fold predictions of checkpoint_best_score.pth lack case(s) c1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not an integer
        main([*argv, "--weight-grid", "x"])
