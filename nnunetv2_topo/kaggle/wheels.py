"""The ``wheels/`` of a bundle: this project's wheel and every distribution it needs at inference that the Kaggle
image lacks, for the target Python and platform, resolved and downloaded by pip; then checked offline.

Resolution is ``pip install --dry-run --report`` for the target (``--only-binary=:all:``, ``--python-version``,
``--platform``), constrained to the image's versions (``kaggle-provided.txt``). When the project needs a newer
version than the image has (pip reports a conflict with a constraint), that package is bundled instead: the offline
install upgrades it. A requirement with no wheel for the target is built from its source distribution when that gives
a pure-Python wheel; a source distribution with compiled code is an error that says how to supply the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

import nnunetv2_topo
from nnunetv2_topo.kaggle.provided import BundleError, Provided, write_stub_wheels

__all__ = ["PROJECT", "Resolved", "Target", "build_project_wheel", "check_offline", "download", "resolve"]

PROJECT = "nnunetv2-topo"
_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """The Python version (``3.12``) and platform tag (``manylinux_2_35_x86_64``) the wheels must install on."""

    python: str
    platform: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"3\.\d{1,2}", self.python):
            raise BundleError(f"--python {self.python!r}: expected MAJOR.MINOR of CPython 3, e.g. 3.12")
        if not re.fullmatch(r"[a-z0-9_]+", self.platform):
            raise BundleError(
                f"--platform {self.platform!r}: expected a wheel platform tag, e.g. manylinux_2_35_x86_64"
            )

    def platforms(self) -> list[str]:
        """The platform tags a machine of this platform accepts: a manylinux tag also accepts every older glibc
        (``manylinux_2_35`` takes ``manylinux_2_28``, ``manylinux2014``, ...), which pip does not expand itself."""
        tag = self.platform
        for legacy, minor in _LEGACY.items():
            if tag.startswith(legacy + "_"):
                tag = f"manylinux_2_{minor}_{tag[len(legacy) + 1 :]}"
        m = _MANYLINUX.match(tag)
        if not m or m.group(1) != "2":
            return [self.platform]
        arch, out = m.group(3), []
        for minor in range(int(m.group(2)), 4, -1):
            out.append(f"manylinux_2_{minor}_{arch}")
            out += [f"{legacy}_{arch}" for legacy, v in _LEGACY.items() if v == minor]
        return out

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python]
        for p in self.platforms():
            args += ["--platform", p]
        return args

    def __str__(self) -> str:
        return f"Python {self.python} on {self.platform}"


@dataclass(frozen=True)
class Resolved:
    """One distribution of the resolution: name, version, and whether the image already has it."""

    name: str
    version: str
    provided: bool
    url: str


PipArg = str | os.PathLike[str]
"""One argument of a pip command line (a path is passed as its string)."""


def _pip(args: Sequence[PipArg], isolated: bool = False, stream: Progress | None = None) -> tuple[int, str]:
    """Run ``python -m pip``; returns (exit status, output). ``isolated``: no pip configuration file and no PIP_*
    variable (an offline check must not see this machine's find-links or indexes). ``stream``: each output line
    that shows progress (Downloading/Saved/Building) is passed to it as it comes."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    if isolated:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    cmd = [sys.executable, "-m", "pip", *map(str, args)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if stream is not None and line.lstrip().startswith(("Downloading", "Saved", "File was already", "Building")):
            verb, _, rest = line.strip().partition(" ")
            stream(f"    {verb} {rest.rsplit('/', 1)[-1]}")  # the file name, not the whole path
    return proc.wait(), "".join(lines)


def _tail(output: str, n: int = 15) -> str:
    """The last ``n`` meaningful lines of pip's output (without the warnings about unusable find-links)."""
    keep = [ln for ln in output.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
    return "\n".join("    " + ln for ln in keep[-n:])


def project_root() -> Path:
    """The source checkout of this package (where ``setup.cfg`` and ``pyproject.toml`` are)."""
    return Path(nnunetv2_topo.__file__).resolve().parents[1]


def build_project_wheel(out: Path, work: Path, progress: Progress) -> Path:
    """This project's wheel (``pip wheel --no-deps``) in ``out``, built from a copy of the checkout in ``work`` so
    that the checkout gets no ``build/`` or ``*.egg-info``."""
    root = project_root()
    if not ((root / "setup.cfg").is_file() and (root / "pyproject.toml").is_file()):
        raise BundleError(
            f"cannot build the {PROJECT} wheel: {root} is not a source checkout (no setup.cfg/pyproject.toml); run "
            "kaggle-bundle from a checkout (pip install -e .) or pass --find-links DIR holding an nnunetv2_topo wheel"
        )
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "LICENSE", "MANIFEST.in"):
        if (root / name).is_file():
            shutil.copy2(root / name, src / name)
    shutil.copytree(
        root / "nnunetv2_topo", src / "nnunetv2_topo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    progress(f"  building the {PROJECT} wheel from {root}")
    try:
        import setuptools  # noqa: F401  (build with the installed backend: no download, no isolation)

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    code, output = _pip(["wheel", "--no-deps", *isolation, "--quiet", "-w", out, src])
    built = sorted(out.glob("nnunetv2_topo-*.whl"))
    if code != 0 or not built:
        raise BundleError(f"building the {PROJECT} wheel from {root} failed:\n{_tail(output)}")
    return built[-1]


def _is_pure(wheel: Path) -> bool:
    try:
        tags = parse_wheel_filename(wheel.name)[3]
    except InvalidWheelFilename:
        return False
    return all(t.abi == "none" and t.platform == "any" and t.interpreter.startswith("py") for t in tags)


def _build_from_sdist(requirement: str, out: Path, target: Target, progress: Progress) -> Path:
    """A pure-Python wheel for ``requirement`` built from its source distribution into ``out``."""
    name = Requirement(requirement).name
    fix = (
        f"build it on a machine with Python {target.python} on {target.platform} "
        f"(pip wheel --no-deps '{requirement}' -w DIR) and pass --find-links DIR, or choose another --platform"
    )
    # a package that publishes platform wheels (for this machine) has compiled code: building its sdist here
    # would take long and give a wheel for this machine only
    probe = out.parent / f".probe-{canonicalize_name(name)}.json"
    code, _ = _pip(["install", "--dry-run", "--no-deps", "--ignore-installed", "--only-binary=:all:", "--report",
                    probe, requirement])  # fmt: skip
    if code == 0:
        items = json.loads(probe.read_text())["install"]
        wheel = Path(unquote(items[0]["download_info"]["url"].rsplit("/", 1)[-1])) if items else None
        probe.unlink()
        if wheel is not None and not _is_pure(wheel):
            raise BundleError(f"{name} has no wheel for {target}; it publishes compiled wheels ({wheel.name}): {fix}")
    progress(f"  {name}: no wheel for {target}; building one from its source distribution ({requirement})")
    tmp = out.parent / f".sdist-{canonicalize_name(name)}"
    code, output = _pip(["wheel", "--no-deps", "--no-binary=:all:", "--quiet", "-w", tmp, requirement])
    built = sorted(tmp.glob("*.whl")) if tmp.is_dir() else []
    if code != 0 or not built:
        raise BundleError(
            f"{name} has no wheel for {target} and building one from its source distribution failed:\n"
            f"{_tail(output)}\n  build it on a machine like the target (pip wheel --no-deps '{requirement}' -w DIR) "
            "and pass --find-links DIR"
        )
    wheel = built[-1]
    if not _is_pure(wheel):
        raise BundleError(
            f"{name} has no wheel for {target}, and its source distribution contains compiled code ({wheel.name} "
            f"was built for this machine): {fix}"
        )
    dest = out / wheel.name
    shutil.move(str(wheel), dest)
    shutil.rmtree(tmp, ignore_errors=True)
    progress(f"    built {dest.name} (pure Python)")
    return dest


def _unavailable(output: str) -> set[str]:
    """The names pip lists under "no matching distributions available for your environment"."""
    names: set[str] = set()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "no matching distributions available for your environment" in line:
            for follow in lines[i + 1 :]:
                if not follow.startswith((" ", "\t")) or not follow.strip():
                    break
                names.update(canonicalize_name(n) for n in re.findall(r"[A-Za-z0-9._-]+", follow))
    return names


def _required(output: str) -> dict[str, list[SpecifierSet]]:
    """``{name: [specifiers]}`` from pip's "X 1.0 depends on NAME<2 and >=1" conflict lines."""
    out: dict[str, list[SpecifierSet]] = {}
    for m in re.finditer(r"depends on ([A-Za-z0-9._-]+)([^\n]*)", output):
        try:
            spec = SpecifierSet(m.group(2).strip().replace(" and ", ","))
        except InvalidSpecifier:
            continue
        out.setdefault(canonicalize_name(m.group(1)), []).append(spec)
    return out


def _no_target_wheel(provided: Provided, key: str, target: Target) -> str:
    return (
        f"--kaggle-provided {provided.path} pins {provided.names[key]}=={provided.versions[key]}, but the package "
        f"index has no wheel of that version for {target} (pip needs its metadata to resolve): check --python and "
        "--platform (the image's) or the version in the file"
    )


def _find_links(folders: Sequence[Path]) -> list[str]:
    return [a for f in folders for a in ("--find-links", str(f))]


def resolve(
    requirement: Path,
    target: Target,
    provided: Provided,
    wheels: Path,
    find_links: Sequence[Path],
    work: Path,
    progress: Progress,
) -> tuple[list[Resolved], dict[str, str]]:
    """Resolve ``requirement`` (this project's wheel file) for ``target`` against the image; returns the
    distributions and ``{name: why}`` of the image's packages that had to be bundled in a newer version.
    Wheels built from source distributions are written to ``wheels``."""
    relaxed: dict[str, str] = {}
    built: set[str] = set()
    report, constraints = work / "report.json", work / "constraints.txt"
    for _ in range(100):
        constraints.write_text(provided.constraints(set(relaxed)))
        args: list[PipArg] = ["install", "--dry-run", "--ignore-installed", "--report", report, *target.pip_args()]
        args += ["-c", constraints, *_find_links([wheels, *find_links]), requirement]
        code, output = _pip(args)
        if code == 0:
            items = json.loads(report.read_text())["install"]
            out = []
            for item in items:
                name, version = item["metadata"]["name"], item["metadata"]["version"]
                key = canonicalize_name(name)
                out.append(Resolved(name, version, provided.has(key, version), item["download_info"]["url"]))
            return out, relaxed
        # a pinned image package pip cannot find: either no wheel of that version for the target (an error), or
        # the project excludes that version (a conflict: bundle another version, below)
        required = _required(output)
        pinned = sorted(
            n
            for n in _unavailable(output)
            if provided.has(n)
            and n not in relaxed
            and all(provided.versions[n] in spec for spec in required.get(n, []))
        )
        if pinned:
            raise BundleError(_no_target_wheel(provided, pinned[0], target))
        conflicting = {canonicalize_name(n) for n in re.findall(r"requested \(constraint\) ([A-Za-z0-9._-]+)", output)}
        new = sorted(n for n in conflicting if n not in relaxed and provided.has(n))
        if new:
            for n in new:
                relaxed[n] = f"the image has {n}=={provided.versions[n]}, which the project's requirements exclude"
                progress(f"  {relaxed[n]}: bundling a version that fits (the offline install replaces the image's)")
            continue
        missing = re.search(r"No matching distribution found for (.+?)(?: \(from [^)]*\))?\s*$", output, re.M)
        if missing:
            try:
                req = Requirement(missing.group(1).strip())
            except InvalidRequirement:
                req = None
            if req is not None:
                key = canonicalize_name(req.name)
                if provided.has(key) and key not in relaxed:
                    raise BundleError(_no_target_wheel(provided, key, target))
                if key not in built:
                    built.add(key)
                    _build_from_sdist(str(req), wheels, target, progress)
                    continue
        raise BundleError(f"pip cannot resolve {PROJECT}'s requirements for {target}:\n{_tail(output)}")
    raise BundleError(f"pip cannot resolve {PROJECT}'s requirements for {target}: too many retries")


def download(items: Sequence[Resolved], wheels: Path, target: Target, progress: Progress) -> None:
    """Download (``pip download --no-deps``) the wheels of ``items`` that ``wheels`` does not hold yet."""
    have = set()
    for w in wheels.glob("*.whl"):
        try:
            name, version = parse_wheel_filename(w.name)[:2]
        except InvalidWheelFilename:
            continue
        have.add((name, str(version)))
    todo = [i for i in items if (canonicalize_name(i.name), i.version) not in have]
    if not todo:
        return
    progress(f"  downloading {len(todo)} wheel(s) for {target}")
    args: list[PipArg] = ["download", "--no-deps", "--progress-bar", "off", "-d", wheels, *target.pip_args()]
    code, output = _pip([*args, *(f"{i.name}=={i.version}" for i in todo)], stream=progress)
    if code != 0:
        raise BundleError(f"downloading the wheels failed:\n{_tail(output)}")


def check_offline(wheels: Path, target: Target, provided: Provided, work: Path) -> tuple[list[Resolved], list[str]]:
    """``pip install --dry-run --no-index --find-links wheels nnunetv2-topo`` for the target, with the image's
    packages stood in for by metadata-only stub wheels and no pip configuration: the offline install resolves.
    Returns the resolution and the wheels in ``wheels`` it does not use."""
    stubs = write_stub_wheels(provided, work / "stubs")
    report = work / "offline-report.json"
    args: list[PipArg] = ["install", "--dry-run", "--ignore-installed", "--no-index", "--report", report]
    args += [*target.pip_args(), *_find_links([wheels, stubs]), PROJECT]
    code, output = _pip(args, isolated=True)
    if code != 0:
        missing = re.search(r"No matching distribution found for (.+?)(?: \(from [^)]*\))?\s*$", output, re.M)
        why = f": {missing.group(1)} is neither in {wheels.name}/ nor in the image" if missing else ""
        raise BundleError(
            f"the offline check failed: with only {wheels.name}/ and the image's packages, pip cannot install "
            f"{PROJECT} for {target}{why}\n{_tail(output, 6)}"
        )
    out, used = [], set()
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        from_image = f"/{stubs.name}/" in url
        out.append(Resolved(name, version, from_image, url))
        if not from_image:
            used.add(unquote(url.rsplit("/", 1)[-1]))
    unused = sorted(w.name for w in wheels.glob("*.whl") if w.name not in used)
    return out, unused
