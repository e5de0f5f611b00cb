"""``kaggle-bundle`` end to end, as on Kaggle: a fresh venv holding only the "image" (torch, numpy, scipy, ... with
what they need, at this machine's versions; its ``pip freeze`` is the ``--kaggle-provided`` file), the offline install
from the bundle's wheels with no index and no pip configuration, then ``submit.py`` writes a valid submission.zip.

The image is linked, not installed (installing torch with its CUDA wheels into a fresh venv takes minutes): its
distributions' files are symbolic links into this venv's site-packages, in a folder that a ``.pth`` file of the fresh
venv adds as a site directory, so pip and ``importlib.metadata`` there see exactly those distributions as installed.
Run with ``-s`` to see the timings."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
import tifffile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nnunetv2_topo.cli.main import main
from nnunetv2_topo.io import read_volume
from nnunetv2_topo.submission import read_test_ids
from nnunetv2_topo.testing.untrained import write_untrained_model_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# what the test "image" holds: the project's inference dependencies that Kaggle's image has too
IMAGE = ("torch", "numpy", "scipy", "scikit-image", "pandas", "matplotlib", "tqdm", "pyyaml", "tifffile", "requests",
         "scikit-learn", "seaborn", "nibabel", "einops", "blosc2", "graphviz", "imageio", "pillow", "networkx",
         "numba", "llvmlite", "packaging")  # fmt: skip


def _closure(names: tuple[str, ...]) -> dict[str, Distribution]:
    """The installed distributions ``names`` need at run time (their requirements with extras, markers evaluated
    for this machine), by canonical name; names not installed here are skipped."""
    found: dict[str, Distribution] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [(name, frozenset()) for name in names]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in found and extras <= extras_seen[key]:
            continue
        try:
            dist = found.get(key) or distribution(name)
        except PackageNotFoundError:
            continue
        found[key] = dist
        extras_seen[key] = extras_seen.get(key, set()) | extras
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((req.name, frozenset(req.extras)))
    return found


def _record(dist: Distribution) -> list[tuple[str, ...]]:
    """The site-packages paths of ``dist``'s files (from its RECORD; faster than ``dist.files`` for torch's 20,000
    files), without files outside site-packages and without ``__pycache__``."""
    text = dist.read_text("RECORD") or ""
    paths = (ln.rsplit(",", 2)[0].split("/") for ln in text.splitlines() if ln.strip())
    return [tuple(p) for p in paths if p[0] not in ("..", "__pycache__")]


def _link_image(names: tuple[str, ...], site: Path) -> list[str]:
    """The stand-in "Kaggle image" without copying gigabytes: in ``site``, symbolic links to the files of the
    distributions ``names`` need (their packages, modules and ``*.dist-info``) in this venv's site-packages. A
    top-level folder that distributions outside the set share (a namespace package such as ``nvidia/``) is made
    here and only the set's files in it are linked. Returns the linked distributions' names."""
    dists = _closure(names)
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    installed = importlib.metadata.distributions(path=[str(purelib)])
    records = {canonicalize_name(d.metadata["Name"]): _record(d) for d in installed}
    owners: dict[str, set[str]] = {}
    for key, paths in records.items():
        for top in {p[0] for p in paths}:
            owners.setdefault(top, set()).add(key)
    for key, dist in dists.items():
        root = Path(dist.locate_file("")).resolve()
        assert root == purelib, f"{key} is installed in {root}, not in {purelib}: the image would be incomplete"
        assert records.get(key), f"{key} has no RECORD: its files are unknown"
        for parts in records[key]:
            if owners[parts[0]] <= dists.keys():  # the whole entry belongs to the image
                if not (site / parts[0]).is_symlink():
                    (site / parts[0]).symlink_to(purelib / parts[0])
            elif len(parts) > 1:  # shared with a distribution outside the image: link file by file
                dst = site.joinpath(*parts)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.is_symlink():
                    dst.symlink_to(purelib.joinpath(*parts))
    return sorted(dists)


def _env(offline: bool = False) -> dict[str, str]:
    """The environment of the fresh venv's processes: no PYTHONPATH (the installed wheel, not this checkout, must
    run), no nnUNet_* variable; offline: no pip configuration either (no find-links, no index of this machine)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("nnUNet")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if offline:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    return env


def _run(cmd: list, env: dict, cwd: Path, timeout: int) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(list(map(str, cmd)), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr, time.monotonic() - t0


def test_bundle_installs_offline_and_submits(kaggle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    timings: dict[str, float] = {}
    model = write_untrained_model_folder(tmp_path / "results" / "Dataset999_Predict", trainer="nnUNetTrainerTopoWarmup",
                                         folds=(0,), patch=(16, 16, 16))  # fmt: skip
    config = tmp_path / "postprocess.json"
    config.write_text(json.dumps({"version": 1, "fusion": {"mode": "logit", "weights": [1.0]}}))
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    try:
        # the "image": a fresh venv (no pip of its own) whose .pth adds the linked distributions as a site
        # directory; its pip list is what the image provides
        _, timings["python -m venv"] = _run(
            [sys.executable, "-m", "venv", "--without-pip", venv], _env(), tmp_path, 300
        )
        t0 = time.monotonic()
        image = tmp_path / "image_site"
        image.mkdir()
        linked = _link_image((*IMAGE, "pip"), image)  # pip too: the image's pip installs the bundle
        assert {"torch", "numpy", "nvidia-cudnn-cu13", "triton"} <= set(linked), linked
        venv_site = next(venv.glob("lib/python*/site-packages"))
        (venv_site / "kaggle_image.pth").write_text(f"import site; site.addsitedir({str(image)!r})\n")
        timings["link the image"] = time.monotonic() - t0
        t0 = time.monotonic()
        freeze, _ = _run([py, "-m", "pip", "list", "--format=freeze"], _env(), tmp_path, 120)
        listed = {canonicalize_name(ln.split("==")[0]) for ln in freeze.splitlines() if "==" in ln}
        assert listed == set(linked), f"the venv lists {sorted(listed)}, linked {linked}"
        _run([py, "-m", "pip", "check"], _env(), tmp_path, 120)  # the image is complete: every requirement is met
        # nothing the bundle must provide is there before the offline install; torch imports (its CUDA libraries
        # are linked too)
        probe = ("import importlib.util as u, torch; "
                 "print([m for m in ('nnunetv2', 'nnunetv2_topo', 'acvl_utils', 'batchgeneratorsv2', 'topolosses',"
                 " 'dynamic_network_architectures', 'timm', 'SimpleITK') if u.find_spec(m)])")  # fmt: skip
        leaked, _ = _run([py, "-c", probe], _env(), tmp_path, 300)
        assert leaked.strip().splitlines()[-1] == "[]", f"importable before the offline install: {leaked}"
        timings["check the image (pip list, pip check, imports)"] = time.monotonic() - t0
        provided = tmp_path / "provided.txt"
        provided.write_text("\n".join(ln for ln in freeze.splitlines() if "==" in ln) + "\n")

        glibc = platform.libc_ver()[1].split(".")
        target = ["--python", f"{sys.version_info[0]}.{sys.version_info[1]}",
                  "--platform", f"manylinux_{glibc[0]}_{glibc[1]}_{platform.machine()}"]  # fmt: skip
        bundle = tmp_path / "bundle"
        t0 = time.monotonic()
        assert main(["kaggle-bundle", "--model", str(model), "--config", str(config), "--output", str(bundle),
                     "--kaggle-provided", str(provided), "--kaggle-id", "tester/vesuvius-test-bundle",
                     *target]) == 0  # fmt: skip
        timings["kaggle-bundle"] = time.monotonic() - t0
        manifest = json.loads((bundle / "kaggle-bundle.json").read_text())
        assert manifest["config"] == "postprocess.json" and len(manifest["models"]) == 1
        assert sorted(manifest["wheels"]) == sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
        assert any(w.startswith("nnunetv2_topo-") for w in manifest["wheels"])
        assert any(w.startswith("nnunetv2-") for w in manifest["wheels"])
        assert not any(w.startswith("torch-") for w in manifest["wheels"]), "torch is in the image"
        kernel = json.loads((bundle / "notebook" / "kernel-metadata.json").read_text())
        assert kernel["enable_internet"] is False and kernel["dataset_sources"] == ["tester/vesuvius-test-bundle"]

        # the notebook's cell 1: offline, only the bundle's wheels
        _, timings["offline install"] = _run(
            [py, "-m", "pip", "install", "--no-index", "--find-links", bundle / "wheels", "nnunetv2-topo"],
            _env(offline=True), tmp_path, 900,
        )  # fmt: skip
        where, _ = _run([py, "-c", "import nnunetv2_topo; print(nnunetv2_topo.__file__)"], _env(), tmp_path, 120)
        assert str(venv) in where, f"nnunetv2_topo imported from {where}, not from the fresh venv"

        # the notebook's cell 2
        out = tmp_path / "submission.zip"
        log, timings["submit.py (2 cases)"] = _run(
            [py, bundle / "submit.py", "--input", kaggle_dir / "test_images", "--csv", kaggle_dir / "test.csv",
             "--output", out, "--device", "cpu", "--time-budget-hours", "1"], _env(), tmp_path, 900,
        )  # fmt: skip
        assert "submit.py: nnunetv2_topo predict" in log and "predicted 2 case(s)" in log, log[-2000:]
        print("\n" + next(ln for ln in log.splitlines() if ln.startswith("predicted ")))
        ids = read_test_ids(kaggle_dir / "test.csv")
        with zipfile.ZipFile(out) as zf:
            assert sorted(zf.namelist()) == sorted(f"{i}.tif" for i in ids)
            for cid in ids:
                mask = tifffile.imread(io.BytesIO(zf.read(f"{cid}.tif")))
                assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
                assert mask.shape == read_volume(kaggle_dir / "test_images" / f"{cid}.tif").shape
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # the offline install's packages
        print("\nkaggle-bundle e2e timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
