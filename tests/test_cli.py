"""The ``nnunetv2_topo`` CLI: help at every level, clear usage errors."""

from __future__ import annotations

import argparse
import re
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


RENAMED = [  # (command, old, new, a value, the other required arguments)
    ("synth", "--out", "--output", "d", []),
    ("evaluate", "--pred", "--input", "p", ["--gt", "g"]),
    ("submit", "--pred", "--binary-input", "p", ["--images", "i", "--csv", "c.csv"]),
    ("submit", "--out", "--output", "s.zip", ["--images", "i", "--csv", "c.csv"]),
    ("plot", "--out", "--output", "p.png", ["fold_0"]),
    ("tune", "--time-budget", "--time-budget-minutes", "5", ["--input", "p", "--gt", "g", "--output", "pp.json"]),
    ("schedule", "--config", "--topo-config", "c.yaml", ["--log", "log.txt"]),
    ("finalize", "--wait", "--wait-seconds", "3", ["out.zarr"]),
]


@pytest.mark.parametrize(("command", "old", "new", "value", "rest"), RENAMED)
def test_old_flag_spellings_still_work_with_a_note(command, old, new, value, rest, capsys) -> None:
    """A renamed flag's old spelling parses to the same namespace as the new one (also as --old=VALUE), prints one
    note on stderr naming the new flag, and is hidden among the options of --help (listed at its end)."""
    parser = build_parser()
    expected = parser.parse_args([command, *rest, new, value])
    assert capsys.readouterr().err == ""
    assert parser.parse_args([command, *rest, old, value]) == expected
    assert parser.parse_args([command, *rest, f"{old}={value}"]) == expected
    err = capsys.readouterr().err
    assert err.count(f"nnunetv2_topo {command}: note: {old} is deprecated; use {new}") == 2
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    options, _, tail = capsys.readouterr().out.partition("old spellings, still accepted with a note:")
    assert f"{old} (now {new})" in tail and f" {old} " not in options and new in options
    with pytest.raises(SystemExit) as exc:  # a bad value: argparse's refusal names the new flag
        parser.parse_args([command, *rest, old])
    assert exc.value.code == 2 and re.search(f"argument (-o/)?{new}: expected one argument", capsys.readouterr().err)


def test_rename_flag_refuses_an_unknown_new_flag() -> None:
    import argparse

    from nnunetv2_topo.cli.arguments import rename_flag

    with pytest.raises(ValueError, match="has no flag --output"):
        rename_flag(argparse.ArgumentParser(prog="x"), "--out", "--output")


@pytest.mark.parametrize(
    ("argv", "listed"),
    [
        (["predict", "--output", "o", "--tta", "rot"], "'none', 'mirror', 'mirror+rot90'"),
        (["predict", "--output", "o.zarr", "--zarr-format", "4"], "2, 3"),
        (["kaggle-bundle", "--model", "m", "--output", "o", "--tta", "all"], "'none', 'mirror', 'mirror+rot90'"),
        (["postprocess", "--input", "i", "--output", "o", "--fusion", "max"], "'logit', 'prob'"),
        (["postprocess", "--input", "i", "--output", "o", "--plug-method", "x"], "'lut', 'axis', 'both'"),
        (["evaluate", "--input", "p", "--gt", "g", "--engine", "fast"], "'auto', 'rules', 'betti-matching-3d'"),
        (["synth", "--output", "o", "--regime", "dense"], "'nominal', 'crowded'"),
        (["demo", "--device", "tpu"], "'auto', 'cpu', 'cuda'"),
    ],
)
def test_a_bad_choice_lists_the_valid_values(argv, listed, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert f"invalid choice: {argv[-1]!r}".replace("'4'", "4") + f" (choose from {listed})" in capsys.readouterr().err


def test_help_texts_state_defaults_and_no_measured_numbers() -> None:
    """Defaults come from the parser (%(default)s), not from hand-written text that can drift; --help carries no
    measured times or memory sizes (they live in benchmarks/RESULTS.md) and does not recommend --tta mirror+rot90,
    which lowered the score there."""
    from nnunetv2_topo.conversion.convert_vesuvius import build_parser as convert_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    measured = re.compile(r"~ ?\d|\d+(\.\d+)? ?(ms|s|GB|MB|GiB|MiB)\b(?! \w+ cache)")
    for name, command in [*sub.choices.items(), ("nnUNetv2_convert_vesuvius", convert_parser())]:
        text = command.format_help()
        assert not measured.search(text), (name, measured.search(text))
        for action in command._actions:
            shown = action.default if isinstance(action.default, (int, float, str)) else None
            if action.help and shown not in (None, False, argparse.SUPPRESS) and "%(default)" not in action.help:
                assert f"default {shown})" not in action.help.replace(":", ""), (name, action.dest)
    predict = sub.choices["predict"].format_help()
    assert "--tta mirror+rot90" not in predict
