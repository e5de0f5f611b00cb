"""The package's layers, enforced: every ``nnunetv2_topo`` import (top-level, inside functions, under
``TYPE_CHECKING``) of every module is read with ``ast`` and checked against :data:`LAYERS`.

A module imports only from its own layer or a lower one; ``trainer_discovery`` (the folder nnU-Net's
``nnUNet_extTrainer`` imports) imports the trainers and nothing imports it; the test-support subpackage ``testing``
is imported by nothing in the package; no two modules import each other, directly or through others (no import
cycle); a subpackage's ``__init__`` only re-exports; no module is over 500 lines (400 in ``trainers/``).
``docs/explanation/architecture.md`` describes these layers; this table is the one definition.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "nnunetv2_topo"

LAYERS: dict[str, tuple[str, ...]] = {
    # values and files every module needs; no knowledge of training or scoring
    "basics": (
        "errors",
        "io",
        "setting_checks",
        "output_checks",
        "machine",
        "ids_csv",
        "nnunet_env",
        "input_checks",
    ),
    # pure computations on arrays and tensors
    "algorithms": ("metrics", "losses", "postprocessing", "scheduling", "transforms", "synth"),
    # algorithms put together over folders, models and runs
    "workflows": (
        "evaluation",
        "inference",
        "tuning",
        "trainers",
        "submission",
        "reduced_plans",
        "scroll",
        "kaggle",
    ),
    # argument parsing and printing; the dataset converter; files copied out (the bundle's submit.py); developer tools
    # (the docs generator); test support; the nnU-Net discovery shim
    "commands": ("cli", "demo", "conversion", "templates", "tools", "testing", "trainer_discovery"),
}
"""Layer -> the first name under ``nnunetv2_topo`` of the modules in it, lowest layer first. The package's own
``__init__`` (dataset constants such as ``IGNORE_LABEL``) is a basic."""

ORDER = list(LAYERS)

KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
"""Imports that break a rule, each with its reason. Every entry must still occur (a stale entry fails the test)."""


def layer_of(module: str) -> str:
    """The layer of a dotted ``nnunetv2_topo`` module name (``AssertionError`` naming the table for a new name)."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    if len(parts) == 1:
        return "basics"
    for layer, names in LAYERS.items():
        if parts[1] in names:
            return layer
    raise AssertionError(
        f"{PACKAGE}.{parts[1]} is in no layer: add it to LAYERS in tests/test_layers.py (and to "
        "docs/explanation/architecture.md)"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def imports_of(module: str, path: Path) -> set[str]:
    """Every ``nnunetv2_topo...`` module ``module`` imports (``from x import y`` counts as ``x.y`` when ``x.y`` is a
    module of the package, else as ``x``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    modules = package_modules()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    found.discard(module)
    return found


def edges() -> list[tuple[str, str]]:
    return [(m, t) for m, p in package_modules().items() for t in sorted(imports_of(m, p))]


def _exception(importer: str, imported: str) -> tuple[str, str] | None:
    for key in KNOWN_EXCEPTIONS:
        if importer == key[0] and (imported == key[1] or imported.startswith(key[1] + ".")):
            return key
    return None


def _top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    for importer, imported in edges():
        reason = None
        if _top(imported) == f"{PACKAGE}.trainer_discovery" and _top(importer) != _top(imported):
            reason = "nothing imports trainer_discovery (it is for nnU-Net's nnUNet_extTrainer only)"
        elif _top(imported) == f"{PACKAGE}.testing" and _top(importer) != _top(imported):
            reason = "nothing in the package imports the test support (nnunetv2_topo.testing)"
        elif ORDER.index(layer_of(imported)) > ORDER.index(layer_of(importer)):
            reason = f"{layer_of(importer)} must not import {layer_of(imported)}"
        if reason is None:
            continue
        key = _exception(importer, imported)
        if key is not None:
            used.add(key)
        else:
            problems.append(f"{importer} imports {imported}: {reason}")
    return problems, used


def test_every_module_is_in_a_layer() -> None:
    for module in package_modules():
        layer_of(module)


def test_imports_run_one_way() -> None:
    problems, used = violations()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)
    stale = sorted(set(KNOWN_EXCEPTIONS) - used)
    assert not stale, f"KNOWN_EXCEPTIONS entries that no longer occur (remove them): {stale}"


def test_subpackage_init_only_reexports() -> None:
    allowed = (ast.Import, ast.ImportFrom)
    for module, path in package_modules().items():
        if path.name != "__init__.py" or module == PACKAGE:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, allowed):
                continue
            if isinstance(node, ast.Expr) and isinstance(getattr(node.value, "value", None), str):
                continue  # docstring
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                    continue
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                continue  # lazy re-export (PEP 562)
            pytest.fail(f"{path.relative_to(REPO)}:{node.lineno}: a package __init__ only re-exports; move this code")


def test_checker_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / PACKAGE / "metrics"
    fake.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from nnunetv2_topo.inference import predict\n")
    (fake / "rel.py").write_text("from ..trainer_discovery import x\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    problems, _ = violations()
    assert problems == [
        "nnunetv2_topo.metrics.bad imports nnunetv2_topo.inference: algorithms must not import workflows",
        "nnunetv2_topo.metrics.rel imports nnunetv2_topo.trainer_discovery: nothing imports trainer_discovery "
        "(it is for nnU-Net's nnUNet_extTrainer only)",
    ]
    with pytest.raises(AssertionError, match="nnunetv2_topo.newthing is in no layer"):
        layer_of("nnunetv2_topo.newthing.x")


def import_cycles(graph: list[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module of the import graph (Tarjan's algorithm): modules
    that import each other, directly or through others, each component sorted, the components sorted."""
    succ: dict[str, list[str]] = {}
    for a, b in graph:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or through others (imports inside functions count: they only
    postpone the cycle to the first call)."""
    cycles = import_cycles(edges())
    assert not cycles, "import cycles; move what both need into one of them or a lower module:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_checker_finds_a_cycle_through_a_function_level_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / PACKAGE / "metrics"
    fake.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("from nnunetv2_topo.metrics.b import x\n")
    (fake / "b.py").write_text("from nnunetv2_topo.metrics import c\n")
    (fake / "c.py").write_text("def f():\n    from nnunetv2_topo.metrics import a\n")
    (fake / "d.py").write_text("from nnunetv2_topo.metrics import a\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert import_cycles(edges()) == [[f"{PACKAGE}.metrics.a", f"{PACKAGE}.metrics.b", f"{PACKAGE}.metrics.c"]]


MAX_LINES = 500
MAX_LINES_TRAINERS = 400
LONG_MODULE_EXCEPTIONS: dict[str, str] = {}
"""Modules allowed over the limit for now, each with its reason (a stale entry fails the test)."""


def test_no_module_over_the_line_limit() -> None:
    too_long, excepted = [], set()
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        limit = MAX_LINES_TRAINERS if rel.startswith(f"{PACKAGE}/trainers/") else MAX_LINES
        lines = len(path.read_text().splitlines())
        if lines > limit:
            if rel in LONG_MODULE_EXCEPTIONS:
                excepted.add(rel)
            else:
                too_long.append(f"{rel}: {lines} lines (limit {limit}); split it")
    assert not too_long, "\n".join(too_long)
    stale = sorted(set(LONG_MODULE_EXCEPTIONS) - excepted)
    assert not stale, f"LONG_MODULE_EXCEPTIONS entries now within the limit (remove them): {stale}"


MAX_FUNCTION_LINES = 80
LONG_FUNCTION_EXCEPTIONS: dict[str, str] = {
    "nnunetv2_topo/metrics/betti_rules.py::relative_reduction": "a numba kernel: one loop over the columns whose "
    "steps share its heap and pools; a call per step would cost in the innermost loop",
}
"""Functions allowed over :data:`MAX_FUNCTION_LINES`, each with its reason (a stale entry fails the test)."""


def test_no_function_over_the_line_limit() -> None:
    """Functions outside ``cli/`` (which splits its own) stay short: check, compute and report steps of their own."""
    too_long, excepted = [], set()
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(f"{PACKAGE}/cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    key = f"{rel}::{node.name}"
                    if key in LONG_FUNCTION_EXCEPTIONS:
                        excepted.add(key)
                    else:
                        too_long.append(f"{key}: {lines} lines (limit {MAX_FUNCTION_LINES}); split it")
    assert not too_long, "\n".join(too_long)
    stale = sorted(set(LONG_FUNCTION_EXCEPTIONS) - excepted)
    assert not stale, f"LONG_FUNCTION_EXCEPTIONS entries now within the limit (remove them): {stale}"


def test_architecture_page_lists_the_layers() -> None:
    """docs/explanation/architecture.md's table names exactly the modules of :data:`LAYERS`, layer by layer."""
    import re

    page = (REPO / "docs" / "explanation" / "architecture.md").read_text()
    for layer, names in LAYERS.items():
        row = re.search(rf"^\| \*\*{layer}\*\* \| ([^|]*) \|", page, re.M)
        assert row, f"architecture.md has no table row for the {layer} layer"
        assert re.findall(r"`([a-z_]+)`", row.group(1)) == list(names), f"architecture.md, {layer}: {row.group(1)}"
