"""The example of docs/how-to/diagnose-training.md comes from a real run of the default trainer, made by
docs/make_examples.py: the page's log excerpt is what the package's own training-log parser reads, it holds the lines
the page explains, with the default trainer's loss terms and plateau metric, and the figure is the script's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nnunetv2_topo.scheduling.training_log import read_training_logs

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs/how-to/diagnose-training.md"
FIGURE = REPO / "docs/progress_topo.png"
SCRIPT = "docs/make_examples.py"
TRAINER = "nnUNetTrainerTopoWarmup"
KEYS = REPO / "docs/reference/config-keys.md"  # generated from the code; tests/test_reference_docs.py keeps it so


def default(key: str) -> object:
    """A configuration key's default, read from the generated reference (cheaper than importing the trainers)."""
    m = re.search(rf"^\| `{key}` \| (?:[^|]|\\\|)* \| `([^`]*)` \|", KEYS.read_text(), re.M)
    assert m, f"{KEYS.name}: no row for {key}"
    return json.loads(m.group(1))


def excerpt() -> str:
    """The code block between the page's EXAMPLE_LOG markers."""
    block = r"<!-- EXAMPLE_LOG start[^>]*-->\s*```\n(.*?)\n```\s*<!-- EXAMPLE_LOG end -->"
    m = re.search(block, PAGE.read_text(), re.S)
    assert m, f"{PAGE.name}: no log excerpt between the EXAMPLE_LOG markers (run {SCRIPT})"
    return m.group(1)


def test_excerpt_is_a_training_log_of_the_default_trainer(tmp_path: Path) -> None:
    log_file = tmp_path / "training_log.txt"
    log_file.write_text(excerpt())
    log = read_training_logs([log_file])  # raises on a log it cannot replay (no epochs from 0, no val_loss)
    assert len(log.val_loss) >= 2
    [(first_epoch, trainer, config)] = log.configs
    assert (first_epoch, trainer) == (0, TRAINER)
    # the default loss and plateau signal, not the five-term loss or val_loss of an older version
    assert config["plateau_metric"] == default("plateau_metric")
    assert config["loss_weights"] == default("loss_weights")
    terms = set(default("loss_weights"))
    for kind in ("train", "val"):
        lines = re.findall(rf": {kind} terms: (.*)$", excerpt(), re.M)
        assert len(lines) == len(log.val_loss)
        assert all({part.split()[0] for part in line.split(", ")} == terms for line in lines)


@pytest.mark.parametrize(
    "pattern",
    [
        r": Current learning rate: \S+ \(warmup 1/\d+\)$",
        r": Current learning rate: \S+ \(plateau phase\)$",
        r": iteration \d+: grad norm \(pre-clip\) \S+, loss \S+, lr \S+$",
        r": grad norm \(pre-clip, clip at \S+\): mean \S+, max \S+; skipped steps 0$",
        r": plateau \(val_loss_ema\): best \S+, epochs without improvement \d+/\d+$",
    ],
)
def test_excerpt_holds_the_lines_the_page_explains(pattern: str) -> None:
    assert re.search(pattern, excerpt(), re.M), f"no line matching {pattern!r} in the excerpt"


def test_figure_was_drawn_by_the_script() -> None:
    from PIL import Image

    with Image.open(FIGURE) as image:
        text = dict(image.text)
    assert text.get("Software") == SCRIPT, f"{FIGURE.name} was not written by {SCRIPT} (metadata: {text})"
    assert text.get("Source", "").startswith(f"{TRAINER},")
    # the caption was written by the same run: it names the figure's number of epochs
    m = re.search(r"<!-- EXAMPLE_CAPTION start[^>]*-->\n(.*?)\n<!-- EXAMPLE_CAPTION end -->", PAGE.read_text(), re.S)
    assert m, f"{PAGE.name}: no caption between the EXAMPLE_CAPTION markers (run {SCRIPT})"
    epochs = re.search(r", (\d+) epochs,", text["Source"]).group(1)
    assert f" {epochs} short epochs" in m.group(1).replace("\n", " ")
