"""``nnunetv2_topo kaggle-bundle``: the checks, the parsers and every bad input (exit 2, one clear line, nothing
left behind). No package index is used here: pip runs only offline (stub wheels) or is replaced by canned output."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from packaging.utils import parse_wheel_filename

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.inference.models import ModelFolder
from nnunetv2_topo.kaggle import BundleError, Target, read_provided
from nnunetv2_topo.kaggle import wheels as wheels_mod
from nnunetv2_topo.kaggle.files import check_kaggle_id, notebook
from nnunetv2_topo.kaggle.models import CHECKPOINT_FIELDS, bundle_names, slim_copy
from nnunetv2_topo.kaggle.provided import DEFAULT_PROVIDED, write_stub_wheels
from nnunetv2_topo.templates.kaggle_submit import parse_args, predict_argv
from nnunetv2_topo.testing.untrained import write_untrained_model_folder as write_model_folder

pytestmark = pytest.mark.usefixtures("restore_ext_trainer")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("kaggle_bundle")
    model = write_model_folder(root / "Dataset999_Predict", trainer="nnUNetTrainerTopoWarmup", folds=(0, 1))
    provided = root / "provided.txt"
    provided.write_text("# the image\ntorch==2.14.1\nnumpy==2.1.3  # pinned\n\n")
    return SimpleNamespace(root=root, model=model, provided=provided)


def _provided(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kaggle-provided.txt"
    p.write_text(text)
    return p


# --- kaggle-provided.txt -------------------------------------------------------------------------------------------


def test_read_provided_parses_pins_and_comments(env) -> None:
    pr = read_provided(env.provided)
    assert {k: str(v) for k, v in pr.versions.items()} == {"torch": "2.14.1", "numpy": "2.1.3"}
    assert pr.has("Torch") and pr.has("torch", "2.14.1") and not pr.has("torch", "2.14.0") and not pr.has("scipy")
    assert pr.constraints() == "numpy==2.1.3\ntorch==2.14.1\n"
    assert pr.constraints({"numpy"}) == "torch==2.14.1\n"


def test_local_version_labels_are_dropped_from_constraints(tmp_path: Path) -> None:
    pr = read_provided(_provided(tmp_path, "torch==2.10.0+cu128\nPyYAML==6.0.3\n"))
    assert pr.constraints() == "PyYAML==6.0.3\ntorch==2.10.0\n"
    assert pr.has("torch", "2.10.0") and pr.has("pyyaml")


def test_default_provided_is_kaggles_image() -> None:
    pr = read_provided(DEFAULT_PROVIDED)
    assert len(pr.versions) > 500
    assert str(pr.versions["torch"]) == "2.10.0" and str(pr.versions["numpy"]) == "2.0.2"
    header = DEFAULT_PROVIDED.read_text().split("\n\n")[0]
    assert "Kaggle/docker-python" in header and "20260514" in header and "Python 3.12" in header


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("numpy>=2\n", "line 1: expected NAME==VERSION (as `pip freeze` writes), got 'numpy>=2'"),
        ("torch==2.1\nfoo @ https://x/foo.whl\n", "line 2: expected NAME==VERSION"),
        ("torch==two\n", "line 1: 'two' is not a valid version"),
        ("torch==2.1\nTorch==2.2\n", "line 2: Torch is listed twice (2.1 and 2.2); keep one"),
        ("# nothing\n", "lists no package"),
    ],
)
def test_bad_provided_file_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = _provided(tmp_path, text)
    with pytest.raises(BundleError) as exc:
        read_provided(path)
    assert f"--kaggle-provided {path}" in str(exc.value) and message in str(exc.value)


def test_stub_wheels_are_metadata_only(env, tmp_path: Path) -> None:
    folder = write_stub_wheels(read_provided(env.provided), tmp_path / "stubs")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["numpy-2.1.3-py3-none-any.whl", "torch-2.14.1-py3-none-any.whl"]
    assert str(parse_wheel_filename(names[1])[1]) == "2.14.1"
    with zipfile.ZipFile(folder / names[1]) as zf:
        assert sorted(zf.namelist()) == ["torch-2.14.1.dist-info/" + n for n in ("METADATA", "RECORD", "WHEEL")]
        assert "Name: torch\nVersion: 2.14.1\n" in zf.read("torch-2.14.1.dist-info/METADATA").decode()


# --- target, ids ---------------------------------------------------------------------------------------------------


def test_manylinux_platform_accepts_older_glibc() -> None:
    tags = Target("3.12", "manylinux_2_35_x86_64").platforms()
    assert tags[0] == "manylinux_2_35_x86_64" and tags[-1] == "manylinux1_x86_64"
    assert {"manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64"} <= set(
        tags
    )
    legacy = Target("3.11", "manylinux2014_x86_64").platforms()
    assert legacy[:2] == ["manylinux_2_17_x86_64", "manylinux2014_x86_64"] and "manylinux_2_28_x86_64" not in legacy
    assert Target("3.12", "win_amd64").platforms() == ["win_amd64"]
    args = Target("3.12", "manylinux_2_17_x86_64").pip_args()
    assert args[:5] == ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.12"]


@pytest.mark.parametrize(
    ("python", "platform", "flag"),
    [("3", "linux_x86_64", "--python '3'"), ("3.12", "Many Linux", "--platform 'Many Linux'")],
)
def test_bad_target(python: str, platform: str, flag: str) -> None:
    with pytest.raises(BundleError, match=flag):
        Target(python, platform)


def test_kaggle_id() -> None:
    assert check_kaggle_id("jdoe/vesuvius-bundle") == ("jdoe", "vesuvius-bundle")
    for bad in ("vesuvius-bundle", "jdoe/Ves uvius", "jdoe/abc", "a/b/c"):
        with pytest.raises(BundleError, match="--kaggle-id"):
            check_kaggle_id(bad)


# --- models --------------------------------------------------------------------------------------------------------


def test_slim_copy_keeps_what_the_predictor_reads(env, tmp_path: Path) -> None:
    src = tmp_path / "full" / env.model.name
    import shutil

    shutil.copytree(env.model, src)
    (src / "dataset_fingerprint.json").write_text("{}")
    for fold in (0, 1):
        path = src / f"fold_{fold}" / "checkpoint_final.pth"
        ckpt = torch.load(path, weights_only=False)
        ckpt.update(optimizer_state={"big": torch.zeros(50_000)}, ema_state={"w": torch.zeros(10)}, logging={})
        torch.save(ckpt, path)
    full, slim = slim_copy(ModelFolder(src, ("0", "1"), "checkpoint_final.pth", {}), tmp_path / "slim")
    assert slim < full / 2
    assert sorted(p.name for p in (tmp_path / "slim").iterdir()) == [
        "dataset.json", "dataset_fingerprint.json", "fold_0", "fold_1", "plans.json"
    ]  # fmt: skip
    for fold in (0, 1):
        small = torch.load(tmp_path / "slim" / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)
        big = torch.load(src / f"fold_{fold}" / "checkpoint_final.pth", weights_only=False)
        assert tuple(small) == CHECKPOINT_FIELDS
        assert small["trainer_name"] == "nnUNetTrainerTopoWarmup" and small["init_args"] == big["init_args"]
        for k, v in big["network_weights"].items():
            assert torch.equal(small["network_weights"][k], v)


def test_bundle_names_are_unique(env, tmp_path: Path) -> None:
    a = ModelFolder(tmp_path / "r1" / "D1" / "T__P__3d", ("0",), "c.pth", {})
    b = ModelFolder(tmp_path / "r2" / "D1" / "T__P__3d", ("0",), "c.pth", {})
    c = ModelFolder(tmp_path / "r2" / "D2" / "T__P__3d", ("0",), "c.pth", {})
    assert bundle_names([a, b, c]) == ["models/D1/T__P__3d", "models/D1/T__P__3d-2", "models/D2/T__P__3d"]


# --- pip: the offline check (real pip, no index) and the resolution loop (canned pip output) ------------------------


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_offline_check_resolves_against_the_image_only(env, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _fake_wheel(wheels, "nnunetv2-topo", "0.1.0", ["numpy>=2", "torch", "yacs"])
    _fake_wheel(wheels, "yacs", "0.1.8", [])
    _fake_wheel(wheels, "unused-thing", "1.0", [])
    target = Target("3.11", "manylinux_2_17_x86_64")
    resolved, unused = wheels_mod.check_offline(wheels, target, read_provided(env.provided), tmp_path / "w1")
    assert {(r.name, r.provided) for r in resolved} == {
        ("nnunetv2-topo", False), ("yacs", False), ("numpy", True), ("torch", True)
    }  # fmt: skip
    assert unused == ["unused_thing-1.0-py3-none-any.whl"]
    (wheels / "yacs-0.1.8-py3-none-any.whl").unlink()
    with pytest.raises(
        BundleError,
        match="the offline check failed.*manylinux_2_17_x86_64: yacs is neither in wheels/ nor in the image",
    ):
        wheels_mod.check_offline(wheels, target, read_provided(env.provided), tmp_path / "w2")
    _fake_wheel(wheels, "yacs", "0.1.8", ["scipy"])  # needs a package neither bundled nor in the image
    with pytest.raises(BundleError, match="scipy is neither in wheels/ nor in the image"):
        wheels_mod.check_offline(wheels, target, read_provided(env.provided), tmp_path / "w3")


def _canned_pip(monkeypatch, outputs: list[tuple[int, str]], calls: list) -> None:
    def fake(args, isolated=False, stream=None):
        calls.append([str(a) for a in args])
        code, text = outputs.pop(0)
        if code == 0:
            report = Path(calls[-1][calls[-1].index("--report") + 1])
            report.write_text(json.dumps({"install": [
                {"metadata": {"name": "nnunetv2-topo", "version": "0.1.0"}, "download_info": {"url": "file:///w/x.whl"}},
                {"metadata": {"name": "numba", "version": "0.61.2"}, "download_info": {"url": "https://x/numba.whl"}},
                {"metadata": {"name": "torch", "version": "2.14.1"}, "download_info": {"url": "https://x/torch.whl"}},
            ]}))  # fmt: skip
        return code, text

    monkeypatch.setattr(wheels_mod, "_pip", fake)


CONFLICT = """ERROR: Cannot install nnunetv2-topo==0.1.0 because these package versions have conflicting dependencies.
The conflict is caused by:
    nnunetv2-topo 0.1.0 depends on numba<0.70 and >=0.61
    The user requested (constraint) numba==0.60.0

Additionally, some packages in these conflicts have no matching distributions available for your environment:
    numba

To fix this you could try to:
"""


def test_resolve_bundles_a_newer_version_when_the_image_conflicts(tmp_path: Path, monkeypatch) -> None:
    provided = read_provided(_provided(tmp_path, "torch==2.14.1\nnumba==0.60.0\n"))
    calls: list = []
    _canned_pip(monkeypatch, [(1, CONFLICT), (0, "")], calls)
    said: list[str] = []
    items, replaced = wheels_mod.resolve(
        tmp_path / "own.whl", Target("3.12", "manylinux_2_35_x86_64"), provided, tmp_path, [], tmp_path, said.append
    )
    assert list(replaced) == ["numba"] and "the image has numba==0.60.0" in said[0]
    assert [(i.name, i.provided) for i in items] == [("nnunetv2-topo", False), ("numba", False), ("torch", True)]
    assert (tmp_path / "constraints.txt").read_text() == "torch==2.14.1\n"  # numba no longer pinned
    assert calls[0][calls[0].index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in calls[0]


def test_resolve_errors_name_the_cause(tmp_path: Path, monkeypatch) -> None:
    provided_path = _provided(tmp_path, "torch==2.10.0\n")
    provided = read_provided(provided_path)
    target = Target("3.12", "manylinux_2_35_x86_64")
    missing = "ERROR: No matching distribution found for torch<2.15,>=2.1 (from nnunetv2-topo)\n"
    _canned_pip(monkeypatch, [(1, missing)], [])
    with pytest.raises(BundleError) as exc:
        wheels_mod.resolve(tmp_path / "own.whl", target, provided, tmp_path, [], tmp_path, print)
    assert f"--kaggle-provided {provided_path} pins torch==2.10.0, but the package index has no wheel" in str(exc.value)
    # pip's other wording of the same problem (a constraint that no wheel for the target satisfies)
    unavailable = (
        "The conflict is caused by:\n    nnunetv2-topo 0.1.0 depends on torch<2.15 and >=2.1\n"
        "    The user requested (constraint) torch<=2.14.1,==2.10.0\n\nAdditionally, some packages in these "
        "conflicts have no matching distributions available for your environment:\n    torch\n\nTo fix this\n"
    )
    _canned_pip(monkeypatch, [(1, unavailable)], [])
    with pytest.raises(BundleError, match="pins torch==2.10.0, but the package index has no wheel of that version"):
        wheels_mod.resolve(tmp_path / "own.whl", target, provided, tmp_path, [], tmp_path, print)
    _canned_pip(monkeypatch, [(1, "WARNING: Location 'x' is ignored: it is neither a file\nERROR: boom\n")], [])
    with pytest.raises(BundleError) as exc:
        wheels_mod.resolve(tmp_path / "own.whl", target, provided, tmp_path, [], tmp_path, print)
    assert "pip cannot resolve nnunetv2-topo's requirements for Python 3.12 on manylinux_2_35_x86_64" in str(exc.value)
    assert "ERROR: boom" in str(exc.value) and "is ignored" not in str(exc.value)


def test_compiled_sdist_is_refused_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    target = Target("3.12", "manylinux_2_35_x86_64")
    probe_finds: list[str] = ["fastthing-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    built: list[str] = []

    def fake(args, isolated=False, stream=None):
        args = [str(a) for a in args]
        if args[0] == "install":  # the probe: which wheel would this machine get?
            if not probe_finds:
                return 1, "ERROR: No matching distribution found for fastthing<2\n"
            url = f"https://x/{probe_finds[0]}"
            Path(args[args.index("--report") + 1]).write_text(
                json.dumps({"install": [{"download_info": {"url": url}}]})
            )
            return 0, ""
        out = Path(args[args.index("-w") + 1])  # pip wheel: "builds" the sdist
        out.mkdir(parents=True, exist_ok=True)
        (out / built[0]).write_bytes(b"")
        return 0, ""

    monkeypatch.setattr(wheels_mod, "_pip", fake)
    with pytest.raises(BundleError) as exc:  # publishes compiled wheels: refused without building
        wheels_mod._build_from_sdist("fastthing<2", tmp_path, target, print)
    assert "fastthing has no wheel for Python 3.12 on manylinux_2_35_x86_64; it publishes compiled wheels" in str(
        exc.value
    ) and "pass --find-links DIR" in str(exc.value)
    probe_finds.clear()  # sdist only, but the build gives a platform wheel
    built.append("fastthing-1.0-cp311-cp311-linux_x86_64.whl")
    with pytest.raises(BundleError, match="its source distribution contains compiled code"):
        wheels_mod._build_from_sdist("fastthing<2", tmp_path, target, print)
    built[0] = "fastthing-1.0-py3-none-any.whl"  # sdist only, pure Python: built and kept
    said: list[str] = []
    wheel = wheels_mod._build_from_sdist("fastthing<2", tmp_path, target, said.append)
    assert wheel == tmp_path / "fastthing-1.0-py3-none-any.whl" and wheel.is_file()
    assert said[-1] == "    built fastthing-1.0-py3-none-any.whl (pure Python)"


# --- submit.py and the notebook --------------------------------------------------------------------------------------


def test_submit_runs_predict_with_the_bundle() -> None:
    manifest = {"models": [{"path": "models/D/a"}, {"path": "models/D/b"}], "folds": ["0", "1"],
                "checkpoint": "checkpoint_best.pth", "config": "postprocess.json", "tta": "mirror+rot90"}  # fmt: skip
    args = parse_args([], manifest)
    assert str(args.input) == "/kaggle/input/vesuvius-challenge-surface-detection/test_images"
    assert str(args.output) == "/kaggle/working/submission.zip" and args.time_budget_hours == 8.0
    argv = predict_argv(args, manifest)
    bundle = Path(__file__).resolve().parents[1] / "nnunetv2_topo" / "templates"  # where submit.py lies in a bundle
    assert argv[:5] == ["predict", "--input", str(args.input), "--output", "/kaggle/working/submission.zip"]
    assert argv[argv.index("--model") + 1] == str(bundle / "models/D/a") and argv.count("--model") == 2
    i = argv.index("--folds")
    assert argv[i : i + 3] == ["--folds", "0", "1"] and argv[argv.index("--tta") + 1] == "mirror+rot90"
    assert argv[argv.index("--config") + 1] == str(bundle / "postprocess.json")
    assert argv[-3:] == ["--time-budget-hours", "8.0", "--log-cases"]
    assert "--folds" not in predict_argv(args, {**manifest, "folds": None, "config": None})


def test_notebook_installs_offline_then_submits() -> None:
    nb = notebook("vesuvius-bundle")
    install, submit = ("".join(c["source"]) for c in nb["cells"][1:3])
    assert 'BUNDLE = "/kaggle/input/vesuvius-bundle"' in install
    assert "!pip install --no-index --find-links {BUNDLE}/wheels nnunetv2-topo" in install
    assert "!python {BUNDLE}/submit.py" in submit and nb["nbformat"] == 4


# --- the command: bad input is exit 2, one line, nothing written ------------------------------------------------------


def _error(capsys, tmp_path: Path, *args) -> str:
    out = tmp_path / "bundle"
    assert main(["kaggle-bundle", "--output", str(out), *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*")), "a failed build left files behind"
    return err


def test_bad_inputs_exit_2_before_any_work(env, tmp_path: Path, capsys) -> None:
    m = ("--model", env.model, "--kaggle-provided", env.provided)
    err = _error(capsys, tmp_path, "--model", tmp_path / "nope", "--kaggle-provided", env.provided)
    assert f"model folder {tmp_path / 'nope'} does not exist" in err
    assert "fold(s) 3 have no checkpoint_final.pth; available folds: 0, 1" in _error(
        capsys, tmp_path, *m, "--folds", "3"
    )
    assert "--python '3.x'" in _error(capsys, tmp_path, *m, "--python", "3.x")
    assert "--kaggle-id 'me'" in _error(capsys, tmp_path, *m, "--kaggle-id", "me")
    bad = _provided(tmp_path, "torch>=2\n")
    assert f"--kaggle-provided {bad} line 1" in _error(capsys, tmp_path, "--model", env.model, "--kaggle-provided", bad)
    assert "--find-links " in _error(capsys, tmp_path, *m, "--find-links", tmp_path / "none")
    assert "--platform 'Linux-x86'" in _error(capsys, tmp_path, *m, "--platform", "Linux-x86")
    err = _error(capsys, tmp_path, *m, "--checkpoint", "checkpoint_best.pth")
    assert "has no fold_*/checkpoint_best.pth: is training finished? (found: checkpoint_final.pth" in err
    (tmp_path / "file").write_text("x")
    assert main(["kaggle-bundle", *map(str, m), "--output", str(tmp_path / "file")]) == 2
    assert f"--output {tmp_path / 'file'} is a file" in capsys.readouterr().err


def test_config_must_match_the_models(env, tmp_path: Path, capsys) -> None:
    m = ("--model", env.model, "--kaggle-provided", env.provided)
    config = tmp_path / "postprocess.json"
    config.write_text(json.dumps({"version": 1, "fusion": {"mode": "logit", "weights": [0.4, 0.6]}}))
    err = _error(capsys, tmp_path, *m, "--config", config)
    assert f"--config {config} (fusion.weights): 2 fusion weight(s) given for 1 input(s)" in err
    config.write_text(json.dumps({"version": 1, "fusion": {"inputs": ["pa", "pb"], "weights": [1, 1]}}))
    err = _error(capsys, tmp_path, *m, "--config", config)
    assert f"--config {config}: tuned on 2 input(s) (pa, pb) but 1 --model given" in err
    config.write_text("{")
    assert f"--config {config}: not valid JSON" in _error(capsys, tmp_path, *m, "--config", config)
    config.write_text(json.dumps({"version": 1, "fusion": {"checkpoints": ["checkpoint_best_score.pth"]}}))
    err = _error(capsys, tmp_path, *m, "--config", config)
    assert "(fusion.checkpoints): tune chose checkpoint_best_score.pth but the bundle carries checkpoint_final" in err


def test_existing_output_is_kept(env, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["kaggle-bundle", "--model", str(env.model), "--output", str(out)]) == 2
    assert "exists and is not empty; add --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "x"


def test_corrupt_checkpoint_leaves_nothing(env, tmp_path: Path, capsys) -> None:
    import shutil

    model = tmp_path / "D" / env.model.name
    shutil.copytree(env.model, model)
    (model / "fold_1" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    err = _error(capsys, tmp_path, "--model", model, "--kaggle-provided", env.provided)
    assert f"{model / 'fold_1' / 'checkpoint_final.pth'}: unreadable checkpoint" in err
