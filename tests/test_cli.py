"""The ``nnunetv2_topo`` CLI: help at every level, clear usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nnunetv2_topo.cli.main import SUBCOMMANDS, build_parser, main


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"nnunetv2_topo {name}" in capsys.readouterr().out


def test_missing_and_unknown_subcommand_are_usage_errors(capsys):
    for argv in ([], ["no-such-command"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from nnunetv2_topo.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_parser_builds_one_parser_per_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)


def test_demo_refuses_a_foreign_non_empty_work_folder(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    rc = main(["demo", "--work", str(tmp_path), "--device", "cpu"])
    assert rc == 2
    assert "is not a demo work folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cases", "1"], "--cases must be at least 2"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--shape", "8", "64", "64"], "--shape must be at least 16"),
    ],
)
def test_demo_bad_options(argv, message, tmp_path, capsys):
    assert main(["demo", "--work", str(tmp_path / "w"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_worker_flag_is_one_block_in_every_command() -> None:
    """-np and --num-processes (cli.arguments.add_processes_argument) mean the same in every command."""
    import argparse

    from nnunetv2_topo.cli import demo, evaluate, synth, tune
    from nnunetv2_topo.conversion.convert_vesuvius import build_parser

    for module in (demo, evaluate, synth, tune):
        parser = argparse.ArgumentParser(exit_on_error=False)
        module.add_arguments(parser)
        flags = {a.dest: a.option_strings for a in parser._actions}
        assert flags["num_processes"] == ["-np", "--num-processes"], module.__name__
    convert = build_parser()
    assert {a.dest: a.option_strings for a in convert._actions}["num_processes"] == ["-np", "--num-processes"]
