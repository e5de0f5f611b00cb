"""The packages the Kaggle image already has (``kaggle-provided.txt``): parsed, turned into pip constraints, and into
metadata-only stub wheels so that pip can check a bundle offline "against the image" on any machine."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from nnunetv2_topo.errors import TopoError

__all__ = ["DEFAULT_PROVIDED", "BundleError", "Provided", "read_provided", "write_stub_wheels"]

DEFAULT_PROVIDED = Path(__file__).resolve().parent / "kaggle_provided_default.txt"
"""The default set: the pip freeze of the Colab image Kaggle's current image is built on (the file says which)."""


class BundleError(TopoError, ValueError):
    """A bundle that cannot be built as asked; the message names the file or flag and the fix."""


@dataclass(frozen=True)
class Provided:
    """``{canonical name: version}`` of the packages the image has, read from ``path``."""

    path: Path
    versions: dict[str, Version]
    names: dict[str, str]  # canonical name -> the name as written

    def has(self, name: str, version: str | Version | None = None) -> bool:
        """True when the image has ``name`` (at ``version``, local labels ignored, when given)."""
        have = self.versions.get(canonicalize_name(name))
        if have is None or version is None:
            return have is not None
        return _public(have) == _public(Version(str(version)))

    def constraints(self, relaxed: Set[str] = frozenset()) -> str:
        """pip constraints pinning every package but ``relaxed`` (canonical names) to the image's version (local
        labels dropped: package indexes publish e.g. torch 2.10.0, not 2.10.0+cu128)."""
        return "".join(f"{self.names[n]}=={_public(v)}\n" for n, v in sorted(self.versions.items()) if n not in relaxed)


def _public(v: Version) -> Version:
    return Version(v.public)


def read_provided(path: str | os.PathLike) -> Provided:
    """Parse ``NAME==VERSION`` lines (blank lines and ``#`` comments allowed); anything else is a BundleError
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"--kaggle-provided {path}: no such file")
    versions: dict[str, Version] = {}
    names: dict[str, str] = {}
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = (s.strip() for s in line.partition("=="))
        where = f"--kaggle-provided {path} line {no}"
        if not sep or not name or any(c in name for c in " <>=!~@;[") or not version:
            raise BundleError(f"{where}: expected NAME==VERSION (as `pip freeze` writes), got {raw.strip()!r}")
        try:
            parsed = Version(version)
        except InvalidVersion:
            raise BundleError(f"{where}: {version!r} is not a valid version") from None
        key = canonicalize_name(name)
        if key in versions and versions[key] != parsed:
            raise BundleError(f"{where}: {name} is listed twice ({versions[key]} and {parsed}); keep one")
        versions[key], names[key] = parsed, name
    if not versions:
        raise BundleError(f"--kaggle-provided {path}: lists no package (expected NAME==VERSION lines)")
    return Provided(path, versions, names)


def write_stub_wheels(provided: Provided, folder: Path) -> Path:
    """One metadata-only ``py3-none-any`` wheel per provided package (no files, no dependencies) in ``folder``: with
    them on ``--find-links`` and no index, pip resolves as if the image's packages were installed."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, version in provided.versions.items():
        dist = key.replace("-", "_")
        info = f"{dist}-{version}.dist-info"
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {provided.names[key]}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: nnunetv2_topo\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
        with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as zf:
            for name, text in files.items():
                zf.writestr(name, text)
    return folder
