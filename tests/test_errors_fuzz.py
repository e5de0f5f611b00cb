"""The fuzz table of issue 22: a user's mistakes and a machine's faults, run through the real commands in-process.

Every row ends in exit 2 with one line naming the file and the cause (no traceback), or in a warning where stated,
and never overwrites or half-writes an output. Disk faults are simulated at the writers (works as root, in CI);
``test_real_tmpfs`` repeats two of them on a real read-only and a real full tmpfs where mounting is permitted.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.errors import TopoError, describe_os_error
from nnunetv2_topo.ids_csv import KaggleCSVError, read_ids_csv
from nnunetv2_topo.input_checks import label_map_problem, label_value_problem
from nnunetv2_topo.io import VolumeError, read_volume, write_tiff

pytestmark = pytest.mark.usefixtures("restore_ext_trainer")


@dataclass
class Outcome:
    rc: int
    out: str
    err: str


def run_cli(capsys, *args) -> Outcome:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Outcome(rc, captured.out, captured.err)


def assert_refused(o: Outcome, *fragments: str) -> None:
    assert o.rc == 2, (o.out, o.err)
    assert "Traceback" not in o.err
    lines = [line for line in o.err.splitlines() if "error:" in line]
    assert len(lines) == 1, o.err  # one line
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content: 'untouched' is an equality of snapshots."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _disk_full(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _read_only(*_a, **_k):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


# ------------------------------------------------------------------------------------------------ tiny inputs


@pytest.fixture(scope="module")
def data(tmp_path_factory, kaggle_dir: Path):
    """Probability maps, label maps and broken variants of the tiny Kaggle dataset's test cases."""
    root = tmp_path_factory.mktemp("fuzz")
    labels = kaggle_dir / "test_labels"
    probs = root / "probs"
    probs.mkdir()
    for p in sorted(labels.glob("*.tif")):
        label = read_volume(p)
        tifffile.imwrite(probs / p.name, np.where(label == 1, 0.9, 0.05).astype(np.float32))
    bad_gt = root / "bad_gt"
    shutil.copytree(labels, bad_gt)
    first = sorted(bad_gt.glob("*.tif"))[0]
    volume = read_volume(first).copy()
    volume[0, 0, :2] = (3, 255)
    write_tiff(first, volume)
    truncated = root / "truncated"
    shutil.copytree(labels, truncated)
    cut = sorted(truncated.glob("*.tif"))[0]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return type("Data", (), {"root": root, "labels": labels, "probs": probs, "bad_gt": bad_gt, "cut": cut,
                             "truncated": truncated, "kaggle": kaggle_dir})  # fmt: skip


# ----------------------------------------------------------------------------------- the one error path


def _exception_classes() -> dict[str, list[type]]:
    """Every exception class defined in a module of the package, by name; the walk imports each module."""
    import importlib
    import inspect
    import pkgutil

    import nnunetv2_topo

    found: dict[str, list[type]] = {}
    names = [nnunetv2_topo.__name__, *(m.name for m in pkgutil.walk_packages(nnunetv2_topo.__path__, "nnunetv2_topo."))]
    for name in names:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == name:
                found.setdefault(cls.__name__, []).append(cls)
    return found


def test_every_user_facing_error_is_a_topo_error() -> None:
    """One error family: every public exception class of the package derives from TopoError (``main()`` prints it
    as one line), under a name no other class has; control-flow exceptions are private (``_Name``)."""
    from nnunetv2_topo.conversion.case_checks import ConversionError
    from nnunetv2_topo.conversion.splits import SplitError
    from nnunetv2_topo.demo import DemoError
    from nnunetv2_topo.errors import CLIError, OutputError
    from nnunetv2_topo.evaluation.folder_scoring import EvaluationError
    from nnunetv2_topo.inference.cases import CaseError
    from nnunetv2_topo.inference.models import ModelError
    from nnunetv2_topo.metrics.engine import EngineUnavailableError
    from nnunetv2_topo.metrics.leaderboard import MetricInputError
    from nnunetv2_topo.postprocessing.probabilities import ProbabilityError
    from nnunetv2_topo.submission import SubmissionError
    from nnunetv2_topo.synth.generator import SheetTopologyError
    from nnunetv2_topo.synth.layout import SynthError
    from nnunetv2_topo.trainers.config import TopoConfigError

    classes = [CLIError, OutputError, VolumeError, KaggleCSVError, SplitError, ConversionError, DemoError, CaseError,
               ModelError, ProbabilityError, EngineUnavailableError, EvaluationError, MetricInputError,
               SubmissionError, SheetTopologyError, SynthError, TopoConfigError]  # fmt: skip
    assert [c.__name__ for c in classes if not issubclass(c, TopoError)] == []
    found = _exception_classes()
    assert {c.__name__ for c in classes} <= set(found)  # the walk sees every module
    public = {name: defs for name, defs in found.items() if not name.startswith("_")}
    outside = sorted(
        f"{c.__module__}.{name}" for name, defs in public.items() for c in defs if not issubclass(c, TopoError)
    )
    assert outside == [], "user-facing exceptions must derive from nnunetv2_topo.errors.TopoError (or be _private)"
    twice = sorted(f"{name}: {', '.join(c.__module__ for c in defs)}" for name, defs in public.items() if len(defs) > 1)
    assert twice == [], "exception names must be unique"


def test_library_refusals_of_user_input_are_topo_errors(tmp_path: Path) -> None:
    """A bad postprocess.json, bad fusion weights, a folder without a training log and tuning without cases raise
    TopoErrors (``main()`` prints them as one line) that are still the ValueError / FileNotFoundError callers
    catch."""
    from nnunetv2_topo.postprocessing import PostprocessConfig, check_fusion_weights, load_postprocess_file
    from nnunetv2_topo.trainers.diagnostics import load_progress
    from nnunetv2_topo.tuning.evaluator import Evaluator

    bad = tmp_path / "postprocess.json"
    bad.write_text("{")
    fold = tmp_path / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text("[]")
    refusals = [
        (lambda: load_postprocess_file(bad), ValueError, "not valid JSON"),
        (lambda: load_postprocess_file(tmp_path / "none.json"), ValueError, "no such post-processing file"),
        (lambda: PostprocessConfig(threshold=2), ValueError, "threshold must be"),
        (lambda: check_fusion_weights([1, -1], 2), ValueError, "finite and >= 0"),
        (lambda: load_progress(fold), ValueError, "expected a JSON object"),
        (lambda: load_progress(tmp_path / "nothing"), FileNotFoundError, "is not a folder"),
        (lambda: Evaluator([]), ValueError, "nothing to tune on"),
    ]
    for call, base, match in refusals:
        with pytest.raises(base, match=match) as err:
            call()
        assert isinstance(err.value, TopoError), (match, type(err.value))


@pytest.mark.parametrize(
    ("code", "path", "expected"),
    [
        (errno.EROFS, "/o/a.tif", "/o/a.tif: Read-only file system; the file system is read-only"),
        (errno.ENOSPC, "/o/s.zip", "/o/s.zip: No space left on device; free space or write the output somewhere"),
        (errno.EACCES, "/o", "/o: Permission denied; choose a folder you may write to"),
        (errno.EISDIR, "/o/x", "/o/x: Is a directory; a folder is in the way where a file is due"),
        (errno.ENOTDIR, "/f/x", "/f/x: Not a directory; a part of the path is a file, not a folder"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(code: int, path: str, expected: str) -> None:
    assert describe_os_error(OSError(code, os.strerror(code), path)).startswith(expected)


def test_an_os_error_in_any_command_is_exit_2_without_traceback(capsys, monkeypatch, tmp_path: Path) -> None:
    import nnunetv2_topo.cli.trainer_path as trainer_path

    def boom(args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(tmp_path / "x"))

    monkeypatch.setattr(trainer_path, "run", boom)
    assert_refused(run_cli(capsys, "trainer-path"), f"{tmp_path / 'x'}: Input/output error")


def test_atomic_writes_name_the_target_not_the_temporary_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tifffile, "imwrite", _disk_full)
    with pytest.raises(OSError) as info:
        write_tiff(tmp_path / "a.tif", np.zeros((2, 2, 2), np.uint8))
    assert info.value.filename == str(tmp_path / "a.tif")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- input checks


def test_label_checks_shared_with_the_converter() -> None:
    assert label_value_problem(np.array([0, 1, 2], np.uint8)) is None
    assert label_value_problem(np.array([0, 3, 255], np.uint8)).startswith("label values 3, 255 outside {0, 1, 2}")
    assert "float32 labels with values 0.0, 0.5" in label_value_problem(np.array([0, 0.5], np.float32))
    assert label_map_problem(np.array([0, 1], np.uint8)) is None
    assert label_map_problem(np.array([0, 255], np.uint8)) is None  # a 0/255 mask is a segmentation
    assert "a label map with the ignore label 2" in label_map_problem(np.array([0, 1, 2], np.uint8))
    assert "3 distinct values" in label_map_problem(np.array([0, 7, 9], np.int16))
    assert label_map_problem(np.array([0.2, 0.7], np.float32)) is None


def test_truncated_and_flat_tiffs_are_named(data, tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match=r"truncated TIFF \(page \d+ needs|truncated TIFF \(its header promises"):
        read_volume(data.cut)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((4, 4), np.uint8))
    with pytest.raises(VolumeError, match=r"got shape \(4, 4\) \(a volume TIFF has one page per z-slice\)"):
        read_volume(flat)


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffid,scroll_id\n1,34117\n2,35360\n",  # Excel's "CSV UTF-8"
        "id,scroll_id\r\n1,34117\r\n2,35360\r\n",  # Windows line ends
        " id , scroll_id \n 1 , 34117 \n2,35360\n\n",  # spaces, a blank last line
        "\ufeffid,scroll_id\r\n1,34117\r\n2,35360\r\n,\r\n",  # all of it, and an empty row
    ],
)
def test_csv_as_people_save_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(text.encode())
    assert [(r.id, r.scroll_id) for r in read_ids_csv(path)] == [("1", "34117"), ("2", "35360")]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"id;scroll_id\n1;2\n", "'id;scroll_id'"),
        ("\u200bid,scroll_id\n1,2\n".encode(), "'\\u200bid'"),  # a zero-width space
        ("\ufeffid,scroll_id\n1,2\n".encode("utf-16"), "not UTF-8 text"),
    ],
)
def test_a_wrong_header_shows_invisible_characters(tmp_path: Path, raw: bytes, shown: str) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes(raw)
    with pytest.raises(KaggleCSVError) as info:
        read_ids_csv(path)
    assert shown in str(info.value)


# ------------------------------------------------------------------------------------ the command table


def _evaluate_bad_gt(d, tmp):
    return ["evaluate", "--input", d.labels, "--gt", d.bad_gt, "--quiet", "-np", "0"], ["label values 3, 255"]


def _evaluate_label_map_as_pred(d, tmp):
    gt = tmp / "gt"
    shutil.copytree(d.labels, gt)
    return ["evaluate", "--input", d.labels, "--gt", gt, "--quiet", "-np", "0"], ["a label map with the ignore label 2"]


def _evaluate_truncated(d, tmp):
    return ["evaluate", "--input", d.truncated, "--gt", d.labels, "--quiet", "-np", "0"], ["truncated TIFF"]


def _postprocess_labels(d, tmp):
    return ["postprocess", "--input", d.labels, "--output", tmp / "out"], ["a label map with the ignore label 2"]


def _postprocess_output_file(d, tmp):
    (tmp / "out").write_text("keep")
    return ["postprocess", "--input", d.probs, "--output", tmp / "out"], ["is a file; give a folder"]


def _postprocess_nonempty(d, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "old.tif").write_text("keep")
    return ["postprocess", "--input", d.probs, "--output", tmp / "out"], ["is not empty", "--overwrite"]


def _submit_out_folder(d, tmp):
    (tmp / "s.zip").mkdir()
    k = d.kaggle
    args = ["submit", "--binary-input", d.labels, "--images", k / "test_images", "--csv", k / "test.csv"]
    return [*args, "--output", tmp / "s.zip", "--overwrite", "--binarize"], ["is a folder; give a file name"]


def _submit_bad_header(d, tmp):
    csv = tmp / "test.csv"
    csv.write_bytes(b"id;scroll_id\n1;2\n")
    args = ["submit", "--binary-input", d.labels, "--images", d.kaggle / "test_images", "--csv", csv]
    return [*args, "--output", tmp / "s.zip"], ["missing column(s) id", "'id;scroll_id'"]


def _synth_seed(d, tmp):
    return ["synth", "--output", tmp / "s", "--seed", "-1", "--quiet"], ["--seed must be >= 0, got -1"]


def _synth_memory(d, tmp):
    return ["synth", "--output", tmp / "s", "--shape", "30000", "30000", "30000"], ["GiB of memory", "smaller --shape"]


def _synth_out_file(d, tmp):
    (tmp / "s").write_text("keep")
    return ["synth", "--output", tmp / "s", "--cases", "1", "--quiet"], ["is a file; give a folder"]


def _tune_bad_gt(d, tmp):
    return ["tune", "--input", d.probs, "--gt", d.bad_gt, "--output", tmp / "pp.json", "-np", "0", "--quiet"], [
        "label values 3, 255"
    ]


def _tune_output_folder(d, tmp):
    (tmp / "pp").mkdir()
    return ["tune", "--input", d.probs, "--gt", d.labels, "--output", tmp / "pp", "--quiet"], [
        "is a folder; give a file name such as"
    ]


def _plot_out_folder(d, tmp):
    fold = tmp / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text(json.dumps({"train_losses": [1.0]}))
    return ["plot", fold, "-o", tmp], ["is a folder; give a file name"]


def _plot_existing_out(d, tmp):
    fold = tmp / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text(json.dumps({"train_losses": [1.0]}))
    (tmp / "mine.png").write_text("keep")
    return ["plot", fold, "-o", tmp / "mine.png"], ["exists; add --overwrite"]


def _plot_truncated_json_no_checkpoint(d, tmp):
    fold = tmp / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text('{"train_losses": [1.0, 0.9')
    return ["plot", fold], ["progress_topo.json: not valid JSON", "holds no checkpoint"]


def _postprocess_broken_config(d, tmp):
    (tmp / "pp.json").write_text('{"version": 1, "steps": {"threshold": 0.')
    return ["postprocess", "--input", d.probs, "--config", tmp / "pp.json", "--output", tmp / "out"], [
        "pp.json: not valid JSON"
    ]


def _postprocess_truncated_npz(d, tmp):
    npz = tmp / "npz"
    npz.mkdir()
    np.savez(npz / "a.npz", probabilities=np.zeros((2, 8, 8, 8), np.float32))
    (npz / "a.npz").write_bytes((npz / "a.npz").read_bytes()[:300])
    return ["postprocess", "--input", npz, "--output", tmp / "out"], ["a.npz: unreadable .npz"]


def _submit_missing_id(d, tmp):
    csv = tmp / "test.csv"
    csv.write_text((d.kaggle / "test.csv").read_text() + "999,1\n")
    args = ["submit", "--input", d.probs, "--images", d.kaggle / "test_images", "--csv", csv]
    return [*args, "--output", tmp / "s.zip"], ["for 1 test id(s)", "999"]


def _evaluate_unpaired(d, tmp):
    gt = tmp / "gt"
    gt.mkdir()
    write_tiff(gt / "other.tif", np.zeros((4, 4, 4), np.uint8))
    return ["evaluate", "--input", d.probs, "--gt", gt, "--quiet"], ["unpaired files"]


REFUSALS: dict[str, Callable] = {
    "postprocess: a truncated postprocess.json (passed before)": _postprocess_broken_config,
    "postprocess: a truncated .npz (passed before)": _postprocess_truncated_npz,
    "submit: an id without a prediction (passed before)": _submit_missing_id,
    "evaluate: unpaired files (passed before)": _evaluate_unpaired,
    "evaluate: ground truth with labels 3 and 255": _evaluate_bad_gt,
    "evaluate: a label map as prediction": _evaluate_label_map_as_pred,
    "evaluate: a truncated TIFF": _evaluate_truncated,
    "postprocess: test_labels as --input": _postprocess_labels,
    "postprocess: --output an existing file": _postprocess_output_file,
    "postprocess: --output a non-empty folder": _postprocess_nonempty,
    "submit: --output an existing folder with --overwrite": _submit_out_folder,
    "submit: a ';' header": _submit_bad_header,
    "synth: --seed -1": _synth_seed,
    "synth: a shape that cannot fit in memory": _synth_memory,
    "synth: --output an existing file": _synth_out_file,
    "tune: ground truth with label 3": _tune_bad_gt,
    "tune: --output a folder": _tune_output_folder,
    "plot: -o a folder": _plot_out_folder,
    "plot: -o an existing file": _plot_existing_out,
    "plot: truncated progress_topo.json, no checkpoint": _plot_truncated_json_no_checkpoint,
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_one_line_and_nothing_written(case: str, data, tmp_path: Path, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args, fragments = REFUSALS[case](data, work)
    before, inputs_before = snapshot(work), snapshot(data.root)
    assert_refused(run_cli(capsys, *args), *fragments)
    assert snapshot(work) == before  # outputs untouched, nothing half-written (no hidden partial files either)
    assert snapshot(data.root) == inputs_before


# -------------------------------------------------------------------- disk faults at the writers (as root)


def _fault_postprocess(d, tmp, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _disk_full)
    return ["postprocess", "--input", d.probs, "--output", tmp / "out"], tmp / "out"


def _fault_submit(d, tmp, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _disk_full)
    k = d.kaggle
    args = ["submit", "--input", d.probs, "--images", k / "test_images", "--csv", k / "test.csv"]
    return [*args, "--output", tmp / "s.zip"], tmp / "s.zip"


def _fault_synth(d, tmp, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _disk_full)
    return ["synth", "--output", tmp / "s", "--cases", "2", "--shape", "16", "16", "16", "--quiet"], tmp / "s"


def _fault_evaluate_json(d, tmp, monkeypatch):
    monkeypatch.setattr(Path, "write_text", _disk_full)
    return ["evaluate", "--input", d.probs, "--gt", d.labels, "--json", tmp / "s.json", "--quiet", "-np", "0"], (
        tmp / "s.json"
    )


def _fault_evaluate_errors(d, tmp, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _disk_full)
    return ["evaluate", "--input", d.probs, "--gt", d.labels, "--errors", tmp / "e", "--quiet", "-np", "0"], tmp / "e"


def _read_only_evaluate_errors(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    return ["evaluate", "--input", d.probs, "--gt", d.labels, "--errors", tmp / "e", "--quiet", "-np", "0"], tmp / "e"


def _fault_plot(d, tmp, monkeypatch):
    import matplotlib.figure

    fold = tmp / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text(json.dumps({"train_losses": [1.0, 0.5], "val_losses": [1.0, 0.6]}))
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _disk_full)
    return ["plot", fold, "-o", tmp / "p.png"], tmp / "p.png"


def _read_only_postprocess(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    return ["postprocess", "--input", d.probs, "--output", tmp / "out"], tmp / "out" / "never"


def _read_only_synth(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    return ["synth", "--output", tmp / "s", "--cases", "1", "--quiet"], tmp / "s"


def _read_only_submit(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    k = d.kaggle
    args = ["submit", "--input", d.probs, "--images", k / "test_images", "--csv", k / "test.csv"]
    return [*args, "--output", tmp / "s.zip"], tmp / "s.zip"


def _read_only_tune(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    return ["tune", "--input", d.probs, "--gt", d.labels, "--output", tmp / "pp.json", "--quiet"], tmp / "pp.json"


def _read_only_plot(d, tmp, monkeypatch):
    import nnunetv2_topo.output_checks as outputs

    fold = tmp / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text(json.dumps({"train_losses": [1.0]}))
    monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
    return ["plot", fold], fold / "progress_topo.png"


def _read_only_predict(suffix: str):
    def setup(d, tmp, monkeypatch):
        import nnunetv2_topo.output_checks as outputs
        from nnunetv2_topo.testing.untrained import write_untrained_model_folder

        model = write_untrained_model_folder(tmp / "m")
        monkeypatch.setattr(outputs.tempfile, "mkstemp", _read_only)
        out = tmp / f"pred{suffix}"
        return ["predict", "--input", d.kaggle / "test_images", "--model", model, "--output", out, "--quiet"], out

    return setup


FAULTS: dict[str, tuple[Callable, str]] = {
    "predict zip: read-only": (_read_only_predict(".zip"), "Read-only file system"),
    "predict folder: read-only": (_read_only_predict(""), "Read-only file system"),
    "submit: read-only": (_read_only_submit, "Read-only file system"),
    "tune: read-only": (_read_only_tune, "Read-only file system"),
    "plot: read-only": (_read_only_plot, "Read-only file system"),
    "postprocess: disk full": (_fault_postprocess, "No space left on device"),
    "submit: disk full": (_fault_submit, "No space left on device"),
    "synth: disk full": (_fault_synth, "No space left on device"),
    "evaluate --json: disk full": (_fault_evaluate_json, "No space left on device"),
    "evaluate --errors: disk full": (_fault_evaluate_errors, "No space left on device"),
    "evaluate --errors: read-only": (_read_only_evaluate_errors, "Read-only file system"),
    "plot: disk full": (_fault_plot, "No space left on device"),
    "postprocess: read-only": (_read_only_postprocess, "Read-only file system"),
    "synth: read-only": (_read_only_synth, "Read-only file system"),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_disk_faults_are_one_line_and_leave_nothing(case: str, data, tmp_path: Path, capsys, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    setup, cause = FAULTS[case]
    args, output = setup(data, work, monkeypatch)
    o = run_cli(capsys, *args)
    monkeypatch.undo()
    assert_refused(o, cause)
    assert not output.exists() or (output.is_dir() and not any(output.iterdir()))
    assert not [p for p in work.rglob(".*") if "partial" in p.name]


def test_tune_report_never_links_a_plot_that_was_not_written(tmp_path: Path, capsys, monkeypatch) -> None:
    import matplotlib.figure
    from test_tune import write_case_folders

    prob_dir, gt_dir = write_case_folders(tmp_path, 2)
    out = tmp_path / "pp.json"
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", _disk_full)
    o = run_cli(capsys, "tune", "--input", prob_dir, "--gt", gt_dir, "--output", out, "-np", "0", "--quiet")
    assert_refused(o, "tune_report.png: No space left on device")
    report = (tmp_path / "tune_report.md").read_text()
    assert "Plot: not written (OSError: No space left on device)" in report and "Plot: tune_report.png" not in report
    assert not (tmp_path / "tune_report.png").exists()
    assert json.loads(out.read_text())["measured"]["status"] == "converged"  # the result itself is complete


# -------------------------------------------------------------------------------- outputs and warnings


def test_postprocess_overwrite_replaces_and_names_stale_files(data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old_case.tif").write_text("from an earlier run")
    o = run_cli(capsys, "postprocess", "--input", data.probs, "--output", out, "--overwrite")
    assert o.rc == 0, o.err
    assert "also holds 1 file(s) this run did not write (old_case.tif)" in o.err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in data.probs.iterdir()) + ["old_case.tif"]


def test_postprocess_warns_about_an_unfinished_tune(data, tmp_path: Path, capsys) -> None:
    config = tmp_path / "postprocess.json"
    config.write_text(json.dumps({"version": 1, "steps": {"threshold": 0.5}, "measured": {"status": "searching"}}))
    o = run_cli(capsys, "postprocess", "--input", data.probs, "--config", config, "--output", tmp_path / "out")
    assert o.rc == 0, o.err
    assert "comes from a tune run that did not finish (status 'searching'" in o.out


def test_csv_with_bom_is_taken_by_submit_and_synth(data, tmp_path: Path, capsys) -> None:
    ids = [r.id for r in read_ids_csv(data.kaggle / "test.csv")]
    csv = tmp_path / "test.csv"
    csv.write_bytes(("\ufeffid,scroll_id\r\n" + "".join(f" {i} ,1\r\n" for i in ids)).encode())
    k = data.kaggle
    o = run_cli(capsys, "submit", "--input", data.probs, "--images", k / "test_images", "--csv", csv,
                "--output", tmp_path / "s.zip")  # fmt: skip
    assert o.rc == 0, o.err
    o = run_cli(capsys, "synth", "--output", tmp_path / "syn", "--cases", "2", "--test-cases", "0", "--ids-from", csv,
                "--shape", "16", "16", "16", "--quiet")  # fmt: skip
    assert o.rc == 0, o.err
    assert [r.id for r in read_ids_csv(tmp_path / "syn" / "train.csv")] == ids[:2]


def test_plot_falls_back_to_the_checkpoint(tmp_path: Path, capsys) -> None:
    fold = tmp_path / "fold_0"
    fold.mkdir()
    (fold / "progress_topo.json").write_text('{"train_losses": [1.0, 0.9')
    log = {"train_losses": [1.0, 0.8, 0.7], "val_losses": [1.1, 0.9, 0.8], "lrs": [0.01] * 3,
           "mean_fg_dice": [0.1, 0.2, 0.3], "ema_fg_dice": [0.1, 0.15, 0.2], "epoch_start_timestamps": [0, 1, 2],
           "epoch_end_timestamps": [1, 2, 3]}  # fmt: skip
    torch.save({"current_epoch": 3, "logging": log}, fold / "checkpoint_latest.pth")
    o = run_cli(capsys, "plot", fold)
    assert o.rc == 0, o.err
    assert f"warning: {fold / 'progress_topo.json'}: not valid JSON" in o.err
    assert "3 epochs, from" in o.out and "checkpoint_latest.pth" in o.out
    (fold / "checkpoint_latest.pth").write_bytes(b"PK\x03\x04 cut")
    assert_refused(run_cli(capsys, "plot", fold), "checkpoint_latest.pth: unreadable checkpoint")


# ----------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    folder = write_untrained_model_folder(tmp_path_factory.mktemp("model") / "m")
    fingerprint = {"foreground_intensity_properties_per_channel": {"0": {"min": 20.0, "max": 230.0}}}
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return folder


@pytest.mark.parametrize(
    ("dtype", "scale", "shown"),
    [(np.float64, 1e6, "float64 image with values [0, 2.55e+08]"), (np.int16, -1, "int16 image with values [-255")],
)
def test_predict_refuses_images_outside_the_training_intensities(
    model: Path, tmp_path: Path, capsys, dtype, scale, shown
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    write_tiff(images / "a.tif", np.full((16, 16, 16), 100, np.uint8))
    tifffile.imwrite(images / "b.tif", (np.arange(16**3).reshape(16, 16, 16) % 256 * scale).astype(dtype))
    out = tmp_path / "out"
    o = run_cli(capsys, "predict", "--input", images, "--model", model, "--output", out, "--device", "cpu", "--quiet")
    assert_refused(o, "case b (b.tif): " + shown, "[20, 230]", "dataset_fingerprint.json", "--allow-intensity-mismatch")
    assert not out.exists()


def test_predict_refuses_a_non_empty_output_folder(model: Path, kaggle_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.tif").write_text("mine")
    o = run_cli(capsys, "predict", "--input", kaggle_dir / "test_images", "--model", model, "--output", out,
                "--device", "cpu", "--quiet")  # fmt: skip
    assert_refused(o, f"--output {out} is not empty (1 entries: keep.tif)", "--overwrite")
    assert snapshot(out) == {"keep.tif": b"mine"}


@pytest.mark.e2e
def test_predict_overwrite_and_allowed_mismatch_run(model: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "b.tif", np.full((16, 16, 16), 1e8, np.float64))
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.tif").write_text("old")
    o = run_cli(capsys, "predict", "--input", images, "--model", model, "--output", out, "--device", "cpu",
                "--quiet", "--tta", "none", "--overwrite", "--allow-intensity-mismatch")  # fmt: skip
    assert o.rc == 0, o.err
    assert "warning: case b (b.tif): float64 image" in o.err and "(stale.tif); they were kept" in o.err
    assert read_volume(out / "b.tif").shape == (16, 16, 16)


# ------------------------------------------------------------------------------- a real tmpfs, if allowed


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize(("options", "cause"), [("size=16k", "No space left on device"), ("ro", "Read-only")])
def test_real_tmpfs(data, tmp_path: Path, capsys, options: str, cause: str) -> None:
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, options):
        pytest.skip("mounting a tmpfs is not permitted here; the simulated faults above cover the same paths")
    try:
        out = mnt / "syn"
        o = run_cli(capsys, "synth", "--output", out, "--cases", "4", "--shape", "32", "32", "32", "--quiet")
        assert_refused(o, cause)
        assert list(mnt.iterdir()) == []  # no staging folder, no partial file
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ---------------------------------------------------------------------------- trainer configuration errors


def test_a_config_error_under_nnunet_train_is_one_line(monkeypatch, capsys) -> None:
    from nnunetv2_topo.errors import exit_if_entry_point
    from nnunetv2_topo.trainers.config import TopoConfigError

    exc = TopoConfigError("f.yaml: key 'plateau_factor' = 2.0 is invalid: must lie in (0, 1)")
    monkeypatch.setattr("sys.argv", ["/venv/bin/python", "-m", "pytest"])
    exit_if_entry_point(exc)  # the API and tests: the caller re-raises the exception itself
    monkeypatch.setattr("sys.argv", ["/venv/bin/nnUNetv2_train", "1", "3d_fullres", "0"])
    with pytest.raises(SystemExit) as info:
        exit_if_entry_point(exc)
    assert info.value.code == 2
    assert capsys.readouterr().err == f"nnUNetv2_train: error: {exc}\n"


@pytest.mark.e2e
@pytest.mark.parametrize("suffix", [".zip", ""])
def test_predict_disk_full_leaves_nothing(model: Path, kaggle_dir: Path, tmp_path: Path, capsys, monkeypatch,
                                          suffix: str) -> None:  # fmt: skip
    out = tmp_path / f"pred{suffix}"
    real = tifffile.imwrite

    def full_on_disk(file, *a, **k):  # the zip writes into memory first: only files on disk fail
        if isinstance(file, (str, os.PathLike)):
            _disk_full()
        return real(file, *a, **k)

    monkeypatch.setattr(tifffile, "imwrite", full_on_disk)
    monkeypatch.setattr("zipfile.ZipFile.writestr", lambda *a, **k: _disk_full())
    o = run_cli(capsys, "predict", "--input", kaggle_dir / "test_images", "--model", model, "--output", out,
                "--device", "cpu", "--tta", "none", "--quiet")  # fmt: skip
    assert_refused(o, f"{out}", "No space left on device")
    assert not out.exists() or list(out.iterdir()) == []
    assert not [p for p in tmp_path.rglob(".*") if "partial" in p.name]


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_converter_disk_faults_are_one_line(kaggle_dir: Path, nnunet_env, capsys, monkeypatch, code: int) -> None:
    import nnunetv2_topo.conversion.convert_vesuvius as convert

    def failing(target):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(convert, "staged_directory", failing)
    rc = convert.main(["--input", str(kaggle_dir), "--dataset-id", "7", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"Dataset007_Vesuvius: {os.strerror(code)}" in err
    assert list(nnunet_env.raw.iterdir()) == []
