"""Shared fixtures: a tiny synthetic Kaggle dataset, nnU-Net environment folders, the real train.csv."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from nnunetv2_topo.synth.layout import write_kaggle_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = REPO / ".venv" / "bin"

KAGGLE_CASES = 6
KAGGLE_TEST_CASES = 2
KAGGLE_SHAPE = (32, 40, 36)


@pytest.fixture(scope="session")
def kaggle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the Kaggle layout (6 train + 2 test cases of 32x40x36, seed 0). Read-only use:
    tests that modify it take ``kaggle_copy``."""
    out = tmp_path_factory.mktemp("kaggle") / "vesuvius"
    write_kaggle_dataset(out, KAGGLE_CASES, KAGGLE_SHAPE, KAGGLE_TEST_CASES, seed=0, progress=False)
    return out


@pytest.fixture
def kaggle_copy(kaggle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of ``kaggle_dir`` that a test may break."""
    dst = tmp_path / "kaggle_copy"
    shutil.copytree(kaggle_dir, dst)
    return dst


@pytest.fixture
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results set to fresh folders under tmp_path."""
    env = SimpleNamespace(
        raw=tmp_path / "nnUNet_raw",
        preprocessed=tmp_path / "nnUNet_preprocessed",
        results=tmp_path / "nnUNet_results",
    )
    for var, path in (
        ("nnUNet_raw", env.raw),
        ("nnUNet_preprocessed", env.preprocessed),
        ("nnUNet_results", env.results),
    ):
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    return env


@pytest.fixture(scope="session")
def real_train_csv() -> Path:
    """The competition's real train.csv (806 ids, 6 scrolls) from ../shared/data; skipped where absent."""
    path = SHARED_DATA / "vesuvius_train.csv"
    if not path.is_file():
        pytest.skip(f"real train.csv not found at {path} (CI keeps ../shared beside the clone)")
    return path


@pytest.fixture
def restore_ext_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict`` and ``kaggle-bundle`` list the TopoWarmup trainers in ``nnUNet_extTrainer``; a module that runs
    them uses this fixture for every test (``pytestmark = pytest.mark.usefixtures("restore_ext_trainer")``), so the
    variable is restored after each test."""
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)


@pytest.fixture
def plotted_lines(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every figure saved while the test runs, as ``{line label: y data}`` over all its axes, in save order."""
    from matplotlib.figure import Figure

    drawn: list[dict] = []
    save = Figure.savefig

    def recording_savefig(fig, *args, **kwargs):
        drawn.append({ln.get_label(): list(ln.get_ydata()) for ax in fig.axes for ln in ax.lines})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return drawn
