"""The generated reference pages (docs/reference/) match the code; the generator finds every command and key."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from nnunetv2_topo.cli.main import SUBCOMMANDS, build_parser
from nnunetv2_topo.tools import reference_docs as rd
from nnunetv2_topo.trainers.config import all_keys

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return rd.generate(REPO)


def test_reference_pages_are_current(pages: dict[str, str]) -> None:
    stale = rd.stale_pages(REPO, pages)
    if "docs/reference/cli.md" in stale and rd.python_argparse() not in (REPO / "docs/reference/cli.md").read_text():
        stale.remove("docs/reference/cli.md")  # written by another Python's argparse: its layout differs, not stale
    assert not stale, (
        f"docs/reference is stale: {', '.join(stale)} no longer match the code. Run `make docs` "
        "(python -m nnunetv2_topo.tools.reference_docs) and commit the pages."
    )


def test_cli_page_has_every_subcommand_and_option(pages: dict[str, str]) -> None:
    text = pages["docs/reference/cli.md"]
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subs) == set(SUBCOMMANDS)
    for name, sub in subs.items():
        assert f"### nnunetv2_topo {name}\n" in text
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, f"{name}: {option} missing from cli.md"
    assert "## nnUNetv2_convert_vesuvius\n" in text and "--dataset-id" in text


def test_cli_page_does_not_depend_on_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = rd.render_cli(REPO)
    monkeypatch.setenv("COLUMNS", "250")
    assert rd.render_cli(REPO) == narrow
    import os

    assert os.environ["COLUMNS"] == "250"  # restored after rendering


def test_config_keys_page_lists_every_key_with_its_default(pages: dict[str, str]) -> None:
    text = pages["docs/reference/config-keys.md"]
    for name in all_keys():
        assert f"| `{name}` |" in text
    assert "| `initial_lr` | float > 0 \\| null | `null` |" in text
    assert "| `seed` | int >= 0 \\| null | `null` |" in text
    assert "| `allow_config_change` |" in text
    assert '`nnUNetTrainerTopoWarmup_AdamW` | optimizer: "adamw", weight_decay: 1e-05' in text


def test_file_formats_blocks_follow_the_code(pages: dict[str, str]) -> None:
    from nnunetv2_topo.postprocessing import PostprocessConfig

    text = pages["docs/reference/file-formats.md"]
    for field in PostprocessConfig().to_dict():
        assert f"| `{field}` |" in text
    assert '"min_component_size": 500' in text  # the example file holds the real defaults


def _copy_repo_pages(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "docs/reference").mkdir(parents=True)
    shutil.copy(REPO / "setup.cfg", root / "setup.cfg")
    for rel in rd.PAGES:
        shutil.copy(REPO / rel, root / rel)
    return root


def test_check_names_the_stale_page_and_make_docs_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _copy_repo_pages(tmp_path)
    page = root / "docs/reference/config-keys.md"
    row = "| `initial_lr` | float > 0 \\| null | `null` |"
    page.write_text(page.read_text().replace(row, "| `initial_lr` | x | 1 |"))
    assert rd.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "docs/reference/config-keys.md" in err and "make docs" in err
    assert rd.main(["--root", str(root)]) == 0
    assert "wrote docs/reference/config-keys.md" in capsys.readouterr().out
    assert rd.main(["--check", "--root", str(root)]) == 0
    assert not list(root.rglob("*.partial*"))


def test_generated_block_in_template_is_refilled_and_unknown_blocks_refused(tmp_path: Path) -> None:
    root = _copy_repo_pages(tmp_path)
    template = root / "docs/reference/file-formats.md"
    emptied = rd._BLOCK.sub(lambda m: m.group(1) + m.group(4), template.read_text())
    template.write_text(emptied)
    assert rd.stale_pages(root) == ["docs/reference/file-formats.md"]
    template.write_text(emptied + "\n<!-- generated: no-such-block -->\n<!-- end generated -->\n")
    with pytest.raises(rd.ReferenceDocsError, match="unknown generated block 'no-such-block'"):
        rd.generate(root)


def test_bad_root_and_missing_template_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert rd.main(["--check", "--root", str(tmp_path / "nowhere")]) == 2
    assert "not the repository root (no setup.cfg); pass --root REPO" in capsys.readouterr().err
    root = _copy_repo_pages(tmp_path)
    (root / "docs/reference/file-formats.md").unlink()
    with pytest.raises(rd.ReferenceDocsError, match="file-formats.md: no such file"):
        rd.generate(root)
    (root / "setup.cfg").write_text("[metadata]\nname = x\n")
    with pytest.raises(rd.ReferenceDocsError, match="no console_scripts"):
        rd.render_cli(root)
