"""``kaggle-bundle``: trained models -> one folder for ``kaggle datasets create``: wheels for the offline install,
slim models, ``submit.py``, a notebook and Kaggle's metadata. Every check runs first; the folder is built in a hidden
sibling of the output and renamed into place only when complete."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nnunetv2_topo
from nnunetv2_topo.inference.predict import TTA_MODES
from nnunetv2_topo.io import staged_directory
from nnunetv2_topo.kaggle.files import MANIFEST, check_kaggle_id, write_kaggle_files
from nnunetv2_topo.kaggle.models import SlimModel, checked_folders, copy_models
from nnunetv2_topo.kaggle.provided import DEFAULT_PROVIDED, BundleError, Provided, read_provided
from nnunetv2_topo.kaggle.wheels import PROJECT, Target, build_project_wheel, check_offline, download, resolve
from nnunetv2_topo.postprocessing.config_file import load_postprocess_file
from nnunetv2_topo.postprocessing.fusion import check_fusion_weights

__all__ = ["BundleReport", "BundleRequest", "build_bundle"]


@dataclass(frozen=True)
class BundleRequest:
    models: Sequence[Path]
    output: Path
    folds: Sequence[str] | None = None
    checkpoint: str = "checkpoint_final.pth"
    config: Path | None = None
    provided: Path = DEFAULT_PROVIDED
    python: str = "3.12"
    platform: str = "manylinux_2_35_x86_64"
    kaggle_id: str = "your-kaggle-username/nnunetv2-topo-bundle"
    tta: str = "mirror"
    find_links: Sequence[Path] = ()
    overwrite: bool = False


@dataclass
class BundleReport:
    output: Path
    models: list[SlimModel] = field(default_factory=list)
    wheels: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    replaced: dict[str, str] = field(default_factory=dict)  # image packages bundled in another version
    from_image: int = 0
    total_bytes: int = 0

    def lines(self) -> list[str]:
        full = sum(m.full_bytes for m in self.models)
        slim = sum(m.slim_bytes for m in self.models)
        wheels = sum(self.wheels.values())
        big = sorted(self.wheels.items(), key=lambda kv: -kv[1])[:5]
        out = [
            f"models: {len(self.models)} ({sum(len(m.folds) for m in self.models)} fold checkpoint(s)): "
            f"{slim / 1e6:.1f} MB, the full checkpoints {full / 1e6:.1f} MB ({slim / max(full, 1):.0%})",
            f"wheels: {len(self.wheels)}, {wheels / 1e6:.1f} MB (largest: "
            + ", ".join(f"{n.split('-')[0]} {b / 1e6:.1f} MB" for n, b in big)
            + f"); {self.from_image} distribution(s) taken from the image",
        ]
        out += [f"replaces the image's package: {why}" for why in self.replaced.values()]
        out.append(f"total size: {self.total_bytes / 1e6:.1f} MB in {self.output}")
        return out


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_config(config: Path | None, n_models: int, checkpoint: str = "checkpoint_final.pth"):
    """The postprocess.json, checked against the models: one fusion weight (and tuned input) per model, and the
    checkpoint ``tune`` chose for each model that takes part is the one bundled (``checkpoint``)."""
    if config is None:
        return None

    try:
        pf = load_postprocess_file(config)
    except (OSError, ValueError) as exc:
        raise BundleError(f"--config {exc}") from exc
    inputs = pf.fusion.inputs
    if inputs and len(inputs) != n_models:
        raise BundleError(
            f"--config {config}: tuned on {len(inputs)} input(s) ({', '.join(inputs)}) but {n_models} --model given; "
            "pass one --model per tuned input, in the same order"
        )
    try:
        check_fusion_weights(pf.fusion.weights, n_models)
    except ValueError as exc:
        raise BundleError(f"--config {config} (fusion.weights): {exc} ({n_models} --model given)") from exc
    chosen = pf.fusion.checkpoints
    if chosen is not None and len(chosen) == n_models:
        weights = pf.fusion.weights or (1.0,) * n_models
        other = sorted({c for c, w in zip(chosen, weights, strict=True) if w > 0 and c not in (None, checkpoint)})
        if other:
            raise BundleError(
                f"--config {config} (fusion.checkpoints): tune chose {', '.join(other)} but the bundle carries "
                f"{checkpoint} of every model; pass --checkpoint {other[0]} or tune again with --checkpoints"
            )
    return pf


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise BundleError(f"--output {output} is a file; pass a folder to create")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise BundleError(f"--output {output} exists and is not empty; add --overwrite to replace it")


def build_bundle(req: BundleRequest, progress: Callable[[str], None] = _say) -> BundleReport:
    """Check everything, then build the bundle in a hidden sibling of ``req.output`` and rename it into place."""
    checked = _check_request(req, progress)
    report = BundleReport(req.output)
    with staged_directory(req.output) as staging:
        work = staging / ".work"
        work.mkdir()
        progress(f"[2/5] slim model copies in {req.output}/models")
        report.models = copy_models(checked.folders, staging, progress)
        if req.config is not None:
            shutil.copy2(req.config, staging / "postprocess.json")
        _stage_wheels(req, checked, staging / "wheels", work, report, progress)

        progress("[5/5] submit.py, notebook, metadata")
        shutil.rmtree(work)
        shutil.copy2(checked.provided.path, staging / "kaggle-provided.txt")
        shutil.copy2(_submit_script(), staging / "submit.py")
        manifest = _manifest(req, report, checked.target)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        report.total_bytes = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        summary = (
            f"{len(report.models)} model(s), {len(report.wheels)} wheels for {checked.target}, "
            f"{report.total_bytes / 1e6:.0f} MB in all; built {manifest['created']}."
        )
        write_kaggle_files(staging, checked.owner, checked.slug, summary)
        report.total_bytes = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    return report


@dataclass(frozen=True)
class _Checked:
    target: Target
    owner: str
    slug: str
    provided: Provided
    folders: list


def _check_request(req: BundleRequest, progress: Callable[[str], None]) -> _Checked:
    """Step 1, the checks that need no network: every bad input fails here, before any download."""
    target = Target(req.python, req.platform)
    owner, slug = check_kaggle_id(req.kaggle_id)
    if req.tta not in TTA_MODES:
        raise BundleError(f"--tta {req.tta!r}: expected one of {', '.join(TTA_MODES)}")
    provided = read_provided(req.provided)
    for folder in req.find_links:
        if not Path(folder).is_dir():
            raise BundleError(f"--find-links {folder}: no such folder")
    _check_output(req.output, req.overwrite)
    progress(f"[1/5] checking {len(req.models)} model folder(s)")
    folders = checked_folders(req.models, req.folds, req.checkpoint)
    pf = _check_config(req.config, len(folders), req.checkpoint)
    if pf is not None:
        weights = pf.fusion.weights or (1.0,) * len(folders)
        for f, w in zip(folders, weights, strict=True):
            progress(f"  fusion weight {w:g} -> {f.path}")
    return _Checked(target, owner, slug, provided, folders)


def _stage_wheels(
    req: BundleRequest, checked: _Checked, wheels: Path, work: Path, report: BundleReport, progress
) -> None:
    """Steps 3 and 4: the wheels for the target, then the offline install check (unused wheels removed)."""
    target, provided = checked.target, checked.provided
    progress(
        f"[3/5] resolving the wheels for {target} against {provided.path.name} ({len(provided.versions)} packages)"
    )
    wheels.mkdir()
    own = build_project_wheel(wheels, work, progress)
    items, replaced = resolve(own, target, provided, wheels, list(req.find_links), work, progress)
    report.replaced = replaced
    download([i for i in items if not i.provided], wheels, target, progress)

    progress(f"[4/5] offline check: pip install --dry-run --no-index --find-links wheels {PROJECT} (image stubbed)")
    resolved, unused = check_offline(wheels, target, provided, work)
    for name in unused:
        (wheels / name).unlink()
        progress(f"  removed {name}: the offline install does not use it")
    report.from_image = sum(1 for r in resolved if r.provided)
    report.wheels = {w.name: w.stat().st_size for w in sorted(wheels.glob("*.whl"))}
    progress(f"  resolves offline: {len(report.wheels)} wheel(s) + {report.from_image} package(s) of the image")


def _manifest(req: BundleRequest, report: BundleReport, target: Target) -> dict:
    return {
        "format": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "project": PROJECT,
        "project_version": _version(),
        "models": [
            {"path": m.relpath, "source": str(m.source.resolve()), "folds": list(m.folds)} for m in report.models
        ],
        "folds": list(req.folds) if req.folds else None,
        "checkpoint": req.checkpoint,
        "config": "postprocess.json" if req.config is not None else None,
        "tta": req.tta,
        "python": target.python,
        "platform": target.platform,
        "wheels": sorted(report.wheels),
    }


def _submit_script() -> Path:
    """The file that becomes the bundle's ``submit.py``. It runs the ``nnunetv2_topo`` command, so it lives in the
    commands layer (``templates/kaggle_submit.py``); the bundle copies the file and never imports it."""
    spec = importlib.util.find_spec("nnunetv2_topo.templates.kaggle_submit")
    assert spec is not None and spec.origin is not None, "a module of this package has a file"
    return Path(spec.origin)


def _version() -> str:
    return nnunetv2_topo.__version__
