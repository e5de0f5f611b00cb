"""``nnunetv2_topo tune``: the search finds a known optimum, cache accounting, cross-validation from per-case
scores, Ctrl-C and the time budget, the report, and every bad CLI input."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.postprocessing import PostprocessConfig
from nnunetv2_topo.postprocessing.config_file import load_postprocess_file
from nnunetv2_topo.tuning import CaseSource, Evaluator, cross_validate, no_postprocessing, tune
from nnunetv2_topo.tuning import evaluator as evaluator_module
from nnunetv2_topo.tuning.space import THRESHOLDS

SHAPE = (24, 24, 24)
DEFAULT = PostprocessConfig()
# The constructed cases' best grid threshold differs from the default one, so that tuning has to move it: the
# largest grid value below the default threshold (which, like the argmax, then loses the under-confident sheets).
TARGET = max(t for t in THRESHOLDS[1:] if t < DEFAULT.threshold)
_ABOVE = min(DEFAULT.threshold, THRESHOLDS[THRESHOLDS.index(TARGET) + 1])
_BELOW = THRESHOLDS[THRESHOLDS.index(TARGET) - 1]
SHEET_P = (TARGET + _ABOVE) / 2  # above TARGET only: every grid threshold >= _ABOVE (default, argmax) loses it
HALO_P = (_BELOW + TARGET) / 2  # above the grid thresholds below TARGET: they thicken the sheets
SHEET_VOXELS = 2 * 18 * 18


def constructed_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probability, label)`` whose best threshold of the grid is exactly ``TARGET`` (below the default).

    Two 2-voxel-thick sheets at ``SHEET_P`` (under-confident: the argmax and the default threshold lose them) with a
    one-voxel halo at ``HALO_P`` on both faces (lower grid thresholds thicken the sheets: VOI falls), and confident
    single-voxel dust (p = 0.9, any dust removal fixes it). ``TARGET`` plus dust removal reproduces the ground
    truth exactly (score 1).
    """
    gt = np.zeros(SHAPE, np.uint8)
    z0 = 5 + seed % 2
    for z in (z0, z0 + 10):
        gt[z : z + 2, 3:21, 3:21] = 1
    gt[:, :, 22:] = 2
    prob = np.full(SHAPE, 0.02, np.float32)
    for z in (z0, z0 + 10):
        prob[z : z + 2, 3:21, 3:21] = SHEET_P
        prob[z - 1, 3:21, 3:21] = prob[z + 2, 3:21, 3:21] = HALO_P
    for i in range(3):
        prob[z0 + 5, 4 + 6 * i, 4 + 5 * seed % 7] = 0.9
    return prob, gt


def write_case_folders(root: Path, n: int, with_extra_gt: bool = False) -> tuple[Path, Path]:
    prob_dir, gt_dir = root / "prob", root / "gt"
    prob_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(n):
        prob, gt = constructed_case(i)
        tifffile.imwrite(prob_dir / f"c{i}.tif", prob)
        write_tiff(gt_dir / f"c{i}.tif", gt)
    if with_extra_gt:
        write_tiff(gt_dir / "extra.tif", constructed_case(0)[1])
    return prob_dir, gt_dir


def sources(prob_dir: Path, gt_dir: Path) -> list[CaseSource]:
    return [CaseSource(p.stem, (p,), gt_dir / p.name) for p in sorted(prob_dir.glob("*.tif"))]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tuned")
    prob_dir, gt_dir = write_case_folders(root, 2)
    out = root / "out" / "postprocess.json"
    out.parent.mkdir()
    outcome = tune(sources(prob_dir, gt_dir), out, num_processes=0, progress=False)
    return outcome, out


def test_search_finds_the_known_optimum(tuned) -> None:
    outcome, out = tuned
    assert outcome.best.threshold == TARGET != DEFAULT.threshold
    assert 0 < outcome.best.min_component_size <= SHEET_VOXELS  # removes the dust, keeps the sheets
    s = outcome.summary
    assert s["score_tuned"] == pytest.approx(1.0)
    assert s["score_default"] < 0.6 and s["score_argmax"] < 0.6  # thresholds above TARGET lose both sheets
    assert s["status"] == "converged"
    assert s["configurations_evaluated"] > len(THRESHOLDS)  # every threshold, then the other steps


def test_written_file_holds_the_best_configuration_and_measurements(tuned) -> None:
    outcome, out = tuned
    pf = load_postprocess_file(out)
    assert pf.steps == outcome.best
    assert pf.measured["score_tuned"] == pytest.approx(1.0)
    assert pf.measured["cases"] == ["c0", "c1"]
    assert pf.measured["cross_validated"]["folds"] == 2
    cache = pf.measured["tile_cache"]
    assert cache["hits"] > 0 and cache["hit_rate"] == cache["hits"] / (cache["hits"] + cache["computed"])


def test_report_files_beside_the_output(tuned) -> None:
    outcome, out = tuned
    md = (out.parent / "tune_report.md").read_text()
    assert outcome.report_md == out.parent / "tune_report.md"
    assert "| none (threshold 0.5) |" in md and f"| + threshold = {TARGET} |" in md
    assert "cross-validated (2 folds" in md
    assert "hit rate" in md
    assert (out.parent / "tune_report.png").read_bytes()[:4] == b"\x89PNG"
    rows = outcome.ablation
    assert rows[0].config == no_postprocessing() and rows[-1].config == outcome.best
    assert rows[-1].means["score"] == pytest.approx(1.0)


def test_cache_counts_hits_for_unchanged_tiles(tmp_path: Path) -> None:
    prob_dir, gt_dir = write_case_folders(tmp_path, 1)
    with Evaluator(sources(prob_dir, gt_dir), num_processes=0) as ev:
        base = PostprocessConfig(threshold=TARGET, min_component_size=16)
        ev.evaluate([base])
        assert (ev.cache.hits, ev.cache.misses) == (0, 8)
        ev.evaluate([replace(base, min_component_size=64)])  # same mask: every tile cached
        assert (ev.cache.hits, ev.cache.misses) == (8, 8)
        ev.evaluate([base])  # already scored: nothing runs
        assert (ev.cache.hits, ev.cache.misses) == (8, 8)
        assert ev.cache.hit_rate == 0.5
        assert ev.results[ev.key(base)]["c0"]["score"] == pytest.approx(1.0)


@pytest.mark.e2e
def test_pool_gives_the_same_scores_as_serial(tmp_path: Path) -> None:
    prob_dir, gt_dir = write_case_folders(tmp_path, 2)
    configs = [PostprocessConfig(threshold=t) for t in (0.25, 0.3, 0.5)]
    with Evaluator(sources(prob_dir, gt_dir), num_processes=0) as serial:
        want = serial.evaluate(configs)
    with Evaluator(sources(prob_dir, gt_dir), num_processes=1) as pooled:
        assert pooled.evaluate(configs) == want
        assert pooled.results == serial.results


def test_cross_validation_uses_the_per_case_scores_only() -> None:
    ev = Evaluator([CaseSource(c, (Path(c),), Path(c)) for c in "abcd"], num_processes=0)
    base = DEFAULT
    tx, ty, tz = [t for t in THRESHOLDS if t != base.threshold][:3]
    x, y = replace(base, threshold=tx), replace(base, threshold=ty)
    table = {base: [0.5, 0.5, 0.5, 0.5], x: [0.9, 0.6, 0.9, 0.6], y: [0.6, 0.8, 0.6, 0.8]}
    for config, scores in table.items():
        ev.results[ev.key(config)] = {c: {"score": s} for c, s in zip("abcd", scores, strict=True)}
        ev.order.append(ev.key(config))
    cv = cross_validate(ev, base, folds=2)
    # fold 0 tests a, c and is chosen on b, d -> y (0.8) scores 0.6, 0.6; fold 1 tests b, d, chosen on a, c -> x: 0.6
    assert cv["heldout_score"] == pytest.approx(0.6)
    assert cv["baseline_score"] == 0.5 and cv["gain"] == pytest.approx(0.1)
    assert cv["folds"] == 2 and f"threshold={ty}," in cv["chosen"][0] and f"threshold={tx}," in cv["chosen"][1]
    assert cross_validate(ev, replace(base, threshold=tz), folds=2) is None  # baseline never evaluated


def test_ctrl_c_leaves_the_best_configuration_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prob_dir, gt_dir = write_case_folders(tmp_path, 1)
    real = evaluator_module.evaluate_task
    calls = []

    def interrupted_on_third_task(*args):
        calls.append(1)
        if len(calls) == 3:  # 1: defaults + none, 2: the threshold sweep, 3: the hysteresis sweep
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(evaluator_module, "evaluate_task", interrupted_on_third_task)
    out = tmp_path / "postprocess.json"
    with pytest.raises(KeyboardInterrupt):
        tune(sources(prob_dir, gt_dir), out, num_processes=0, progress=False)
    pf = load_postprocess_file(out)
    assert pf.steps == replace(DEFAULT, threshold=TARGET)  # the threshold sweep had finished
    assert pf.measured["status"] == "interrupted (Ctrl-C)"
    assert pf.measured["score_tuned"] == pytest.approx(1.0)
    assert "interrupted" in (tmp_path / "tune_report.md").read_text()
    assert not list(tmp_path.glob(".*partial*"))


def test_time_budget_stops_with_the_defaults_written(tmp_path: Path) -> None:
    prob_dir, gt_dir = write_case_folders(tmp_path, 1)
    out = tmp_path / "postprocess.json"
    outcome = tune(sources(prob_dir, gt_dir), out, num_processes=0, time_budget_s=0.0, progress=False)
    assert outcome.summary["status"] == "stopped by the time budget"
    assert load_postprocess_file(out).steps == PostprocessConfig()


# ------------------------------------------------------------------ CLI


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["tune", *argv])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


@pytest.mark.e2e
def test_cli_end_to_end_with_extra_gt_and_fused_npz_inputs(tmp_path: Path, capsys) -> None:
    prob_dir, gt_dir = write_case_folders(tmp_path, 2, with_extra_gt=True)
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    for i in range(2):
        p1 = constructed_case(i)[0]
        np.savez_compressed(npz_dir / f"c{i}.npz", probabilities=np.stack([1 - p1, p1]))
    out = tmp_path / "pp" / "postprocess.json"
    out.parent.mkdir()
    rc, text = _cli(
        capsys, "--input", str(prob_dir), "--input", str(npz_dir), "--fusion", "prob", "--weights", "1", "1",
        "--gt", str(gt_dir), "--output", str(out), "-np", "1", "--quiet",
    )  # fmt: skip
    assert rc == 0, text
    assert f"| + threshold = {TARGET} |" in text and "tile cache hit rate" in text and "cross-validated" in text
    data = json.loads(out.read_text())
    assert data["steps"]["threshold"] == TARGET
    assert data["fusion"] == {"mode": "prob", "weights": [1.0, 1.0], "inputs": [str(prob_dir), str(npz_dir)]}
    assert data["measured"]["cases"] == ["c0", "c1"]  # "extra" has ground truth only
    assert (out.parent / "tune_report.md").exists() and (out.parent / "tune_report.png").exists()


@pytest.fixture
def cli_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    prob_dir, gt_dir = write_case_folders(tmp_path, 2)
    return prob_dir, gt_dir, tmp_path / "postprocess.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, g, o: ["--gt", str(g.parent / "nope")], "--gt folder .*nope does not exist"),
        (lambda p, g, o: ["--input", str(p.parent / "nope")], "nope: not a folder; give a folder"),
        (lambda p, g, o: ["--weights", "1", "2"], r"2 weight\(s\) for 1 --input\(s\); give one weight per --input"),
        (lambda p, g, o: ["--weights", "-1"], r"--weights -1\.0: fusion weights must be finite and >= 0, got -1\.0"),
        (lambda p, g, o: ["--weights", "0"], "--weights 0.0: fusion weights sum to 0"),
        (lambda p, g, o: ["--time-budget-minutes", "0"], "--time-budget-minutes must be a positive number"),
        (lambda p, g, o: ["--cv-folds", "1"], "--cv-folds must be at least 2"),
        (lambda p, g, o: ["-np", "-1"], "-np must be >= 0"),
        (lambda p, g, o: ["--output", str(g / "c0.tif" / "pp.json")], "c0.tif is a file, not a folder"),
        # argparse's own refusals (exit status 2 as well)
        (lambda p, g, o: ["--fusion", "max"], "argument --fusion: invalid choice: 'max'"),
        (lambda p, g, o: ["--weights", "a"], "argument --weights: invalid float value: 'a'"),
        (lambda p, g, o: ["--time-budget-minutes", "x"], "argument --time-budget-minutes: invalid float value: 'x'"),
        (lambda p, g, o: ["-np", "x"], "argument -np/--num-processes: invalid int value: 'x'"),
    ],
)
def test_cli_bad_arguments(capsys, cli_folders, change, message) -> None:
    prob_dir, gt_dir, out = cli_folders
    # a repeated --gt/--output replaces the first one; a repeated --input adds one
    args = ["--input", str(prob_dir), "--gt", str(gt_dir), "--output", str(out), *change(prob_dir, gt_dir, out)]
    try:
        rc, text = _cli(capsys, *args)
    except SystemExit as exc:  # argparse
        rc, text = exc.code, capsys.readouterr().err
    assert rc == 2
    assert re.search(re.escape(message) if message.startswith("argument ") else message, text), text
    assert not out.exists()


def test_cli_refuses_an_existing_output(capsys, cli_folders) -> None:
    prob_dir, gt_dir, out = cli_folders
    out.write_text("{}")
    rc, text = _cli(capsys, "--input", str(prob_dir), "--gt", str(gt_dir), "--output", str(out))
    assert rc == 2 and f"--output {out} exists; add --overwrite" in text
    assert out.read_text() == "{}"


def test_cli_no_common_cases(capsys, cli_folders, tmp_path: Path) -> None:
    prob_dir, _, out = cli_folders
    other_gt = tmp_path / "other_gt"
    other_gt.mkdir()
    write_tiff(other_gt / "zzz.tif", constructed_case(0)[1])
    rc, text = _cli(capsys, "--input", str(prob_dir), "--gt", str(other_gt), "--output", str(out))
    assert rc == 2 and "no common cases: none of the 2 case(s) of --input" in text


def test_cli_case_without_ground_truth(capsys, cli_folders) -> None:
    prob_dir, gt_dir, out = cli_folders
    (gt_dir / "c1.tif").unlink()
    rc, text = _cli(capsys, "--input", str(prob_dir), "--gt", str(gt_dir), "--output", str(out))
    assert rc == 2 and "1 case(s) of --input have no ground truth" in text and "c1" in text


def test_cli_inputs_with_different_cases(capsys, cli_folders, tmp_path: Path) -> None:
    prob_dir, gt_dir, out = cli_folders
    second = tmp_path / "second"
    second.mkdir()
    tifffile.imwrite(second / "c0.tif", constructed_case(0)[0])
    rc, text = _cli(capsys, "--input", str(prob_dir), "--input", str(second), "--gt", str(gt_dir), "--output", str(out))
    assert rc == 2 and "c1" in text


def test_cli_empty_gt_folder_and_shape_mismatch(capsys, cli_folders, tmp_path: Path) -> None:
    prob_dir, gt_dir, out = cli_folders
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, text = _cli(capsys, "--input", str(prob_dir), "--gt", str(empty), "--output", str(out))
    assert rc == 2 and "holds no volumes" in text
    write_tiff(gt_dir / "c1.tif", np.zeros((8, 8, 8), np.uint8))
    rc, text = _cli(capsys, "--input", str(prob_dir), "--gt", str(gt_dir), "--output", str(out), "-np", "0")
    assert rc == 2 and "case 'c1'" in text and "shape (24, 24, 24)" in text and "(8, 8, 8)" in text


def test_cli_is_registered() -> None:
    from nnunetv2_topo.cli.main import SUBCOMMANDS

    assert SUBCOMMANDS["tune"] == "tune"


@pytest.mark.e2e
def test_workers_do_not_run_the_callers_main_script(tmp_path: Path) -> None:
    """A script without an ``if __name__ == "__main__"`` guard runs once, not once more per worker."""
    import subprocess
    import sys

    prob_dir, gt_dir = write_case_folders(tmp_path, 2)
    marker = tmp_path / "runs.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        "from pathlib import Path\n"
        "from nnunetv2_topo.tuning import CaseSource, Evaluator\n"
        "from nnunetv2_topo.postprocessing import PostprocessConfig\n"
        f"with open({str(marker)!r}, 'a') as fh:\n"
        "    fh.write('run\\n')\n"
        f"srcs = [CaseSource(c, (Path({str(prob_dir)!r}) / f'{{c}}.tif',), Path({str(gt_dir)!r}) / f'{{c}}.tif')"
        " for c in ('c0', 'c1')]\n"
        "with Evaluator(srcs, num_processes=2) as ev:\n"
        f"    print(ev.evaluate([PostprocessConfig(threshold={TARGET})]))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "run\n"
    assert float(done.stdout.strip()[1:-1]) == pytest.approx(1.0)


def test_search_space_covers_every_field_in_step_order() -> None:
    from nnunetv2_topo.postprocessing import STEP_FIELDS, STEP_ORDER
    from nnunetv2_topo.tuning import search_space
    from nnunetv2_topo.tuning.space import uncovered_fields

    space = search_space()
    assert uncovered_fields() == []
    assert space[0].fields == ("threshold",)  # threshold first
    steps = [c.step for c in space]
    assert steps == sorted(steps, key=STEP_ORDER.index) and set(steps) == set(STEP_ORDER)
    for c in space:
        assert set(c.fields) <= set(STEP_FIELDS[c.step])
        assert len(c.settings) >= 2 and len(set(c.settings)) == len(c.settings)
        for setting in c.settings:  # every setting is a valid configuration on its own
            replace(PostprocessConfig(threshold=0.1), **c.changes(setting))
    by_fields = {c.fields: c.settings for c in space}
    assert all(len(r) == 2 for (r,) in by_fields[("closing_radius",)])  # (z, yx) radii
    assert {m for on, m in by_fields[("plug_holes", "plug_method")] if on} == {"lut", "axis", "both"}
    assert DEFAULT.threshold in {t for (t,) in by_fields[("threshold",)]}
    assert DEFAULT.min_component_size in {n for (n,) in by_fields[("min_component_size",)]}
    assert DEFAULT.patch_holes in {n for (n,) in by_fields[("patch_holes",)]}
    none = no_postprocessing()
    assert none == PostprocessConfig(
        threshold=0.5, hysteresis_high=None, min_component_size=0, plug_holes=False, plug_method="lut",
        patch_holes=0, closing_radius=(0, 0), fill_holes=False,
    )  # fmt: skip


def test_ablation_adds_the_steps_in_step_order() -> None:
    from nnunetv2_topo.tuning import ablation

    best = PostprocessConfig(
        threshold=0.25, hysteresis_high=0.85, min_component_size=1000, plug_holes=True, plug_method="axis",
        patch_holes=100, closing_radius=(2, 1), fill_holes=True,
    )  # fmt: skip

    class Scores:  # every configuration scores 0.5: only the rows' order and labels matter here
        cases = ["a"]

        def evaluate(self, configs):
            return [0.5] * len(configs)

        def mean(self, config, key="score"):
            return 0.5

    rows = ablation(Scores(), best)
    assert [r.label for r in rows] == [
        "none (threshold 0.5)",
        "+ threshold = 0.25",
        "+ hysteresis_high = 0.85",
        "+ min_component_size = 1000",
        "+ plug_holes = True, plug_method = axis",
        "+ patch_holes = 100",
        "+ closing_radius = (2, 1)",
        "+ fill_holes = True",
    ]
    assert rows[0].config == no_postprocessing() and rows[-1].config == best


def test_hysteresis_keeps_only_components_with_a_confident_voxel() -> None:
    from nnunetv2_topo.postprocessing import postprocess_volume

    prob = np.zeros((8, 8, 8), np.float32)
    prob[1, 1:4, 1:4] = 0.4
    prob[1, 2, 2] = 0.9  # confident seed
    prob[5, 1:4, 1:4] = 0.4  # weak component without a seed
    config = PostprocessConfig(threshold=0.3, hysteresis_high=0.8, min_component_size=0, plug_holes=False)
    out = postprocess_volume(prob, config)
    assert out[1].sum() == 9 and out[5].sum() == 0
    with pytest.raises(ValueError, match=r"hysteresis_high must lie between threshold \(0.5\) and 1, got 0.5"):
        PostprocessConfig(threshold=0.5, hysteresis_high=0.5)


def test_cli_pools_the_folds_of_a_model_folder_and_scores_only_their_cases(tmp_path: Path, capsys) -> None:
    """``--input MODEL`` pools ``fold_*/validation/*.npz`` (nnU-Net's ``.tif``/``.pkl`` beside them ignored);
    ``--gt`` is nnU-Net's ``gt_segmentations`` with every case, more than the folds validated."""
    from nnunetv2_topo.testing.probability_maps import simulated_case

    model = tmp_path / "Dataset001_X" / "nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres"
    gt_dir = tmp_path / "gt_segmentations"
    gt_dir.mkdir(parents=True)
    folds = {0: ["s0", "s2"], 1: ["s1", "s3"]}
    for fold, cases in folds.items():
        val = model / f"fold_{fold}" / "validation"
        val.mkdir(parents=True)
        for cid in cases:
            prob, label = simulated_case(32, (7, int(cid[1:])), "under-confident")
            np.savez_compressed(val / f"{cid}.npz", probabilities=np.stack([1 - prob, prob]))
            write_tiff(val / f"{cid}.tif", (prob > 0.5).astype(np.uint8))  # nnU-Net's argmax beside it
            (val / f"{cid}.pkl").write_bytes(b"")
            write_tiff(gt_dir / f"{cid}.tif", label)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    for extra in ("s4", "s5"):  # training cases no fold validated
        write_tiff(gt_dir / f"{extra}.tif", simulated_case(32, (7, int(extra[1:])))[1])
    out = tmp_path / "postprocess.json"
    rc, text = _cli(capsys, "--input", str(model), "--gt", str(gt_dir), "--output", str(out), "-np", "0", "--quiet")
    assert rc == 0, text
    pf = load_postprocess_file(out)
    assert pf.measured["cases"] == ["s0", "s1", "s2", "s3"]
    assert pf.fusion.inputs == (str(model),) and pf.fusion.weights is None
    assert pf.measured["configurations_evaluated"] >= 30
    # under-confident maps: the tuned threshold is below the default one and the score above it
    assert pf.steps.threshold < DEFAULT.threshold
    assert pf.measured["score_tuned"] > pf.measured["score_default"] + 0.05
    # postprocess applies the file to the same model folder: one clean volume per pooled case
    assert main(["postprocess", "--input", str(model), "--config", str(out), "--output", str(tmp_path / "pp")]) == 0
    assert sorted(p.name for p in (tmp_path / "pp").iterdir()) == ["s0.tif", "s1.tif", "s2.tif", "s3.tif"]
