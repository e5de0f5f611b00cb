"""Produce the example of docs/how-to/diagnose-training.md from a real run.

Trains the default trainer (``nnUNetTrainerTopoWarmup``) with the real ``nnUNetv2_train`` on a small synthetic
dataset on the CPU (the demo's stages: synth -> convert -> plan and preprocess -> reduced plans -> train; a few
minutes), then

* redraws ``docs/progress_topo.png`` from the run's ``progress_topo.json`` with the package's own plot, tagged in its
  PNG metadata (``Software``: this script, ``Source``: the run) so that a test can tell it from a hand-made figure;
* writes an excerpt of the run's ``training_log_*.txt`` into the page between the ``EXAMPLE_LOG`` markers (a test
  reads it back with the package's training-log parser).

Run from the repository root (``nice -n 10`` on a shared machine)::

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python docs/make_examples.py [--work /tmp/docs_example]

``--reuse`` skips the training when ``--work`` already holds the finished run (e.g. to change the excerpt only).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

from nnunetv2_topo.demo import TOPO_TRAINER, Demo, DemoOptions
from nnunetv2_topo.trainers.diagnostics import load_progress, plot_progress_topo

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "how-to" / "diagnose-training.md"
FIGURE = DOCS / "progress_topo.png"
SCRIPT = "docs/make_examples.py"
START, END = "<!-- EXAMPLE_LOG start: written by docs/make_examples.py -->", "<!-- EXAMPLE_LOG end -->"
CAPTION_START = "<!-- EXAMPLE_CAPTION start: written by docs/make_examples.py -->"
CAPTION_END = "<!-- EXAMPLE_CAPTION end -->"

CONFIG = {
    # a budget of minutes on a CPU; the schedule's keys shortened so that the warmup, the plateau phase and the
    # final anneal all show up in 16 epochs (everything else is the default trainer's)
    "num_epochs": 16,
    "num_iterations_per_epoch": 12,
    "num_val_iterations_per_epoch": 3,
    "warmup_epochs": 2,
    "plateau_patience": 2,
    "plateau_cooldown": 1,
    "grad_norm_log_every": 12,
    "seed": 0,
}
EXCERPT_EPOCHS = 3
"""The excerpt shows the configuration block and the first epochs of the log (the parser needs them from 0): the
warmup and the first epoch of the plateau phase."""
CONFIG_KEYS = ("loss_weights", "warmup_epochs", "plateau_metric", "plateau_patience", "grad_clip_norm")
"""The configuration lines kept in the excerpt (the keys the page talks about)."""


class ExampleRun(Demo):
    """The demo's stages up to the training of the default trainer, with :data:`CONFIG`."""

    def write_config(self) -> None:
        (self.work / "demo_config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))


def train(work: Path, reuse: bool) -> Path:
    opts = DemoOptions(work=work, cases=8, test_cases=1, device="cpu", num_processes=2, baseline=False)
    run = ExampleRun(opts)
    fold = run.fold_dir(TOPO_TRAINER)
    if reuse and (fold / "checkpoint_final.pth").exists():
        return fold
    run.prepare_work_folder()
    run.stage("synthesise", run.synthesise)
    run.stage("convert", run.convert)
    run.stage("plan and preprocess", run.plan_and_preprocess)
    run.write_config()
    run.stage(f"train {TOPO_TRAINER}", run.train, TOPO_TRAINER)
    return fold


def _strip_timestamp(line: str) -> str:
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ?", "", line)


def excerpt(log_text: str) -> str:
    """The configuration header with :data:`CONFIG_KEYS`, then epochs ``0 .. EXCERPT_EPOCHS - 1`` as logged."""
    lines = [line.rstrip() for line in log_text.splitlines()]
    out: list[str] = []
    header = next(i for i, line in enumerate(lines) if re.match(r"^\w+ configuration \(", line))
    out.append(re.sub(r"\(from .*\):$", "(from demo_config.yaml):", lines[header]))
    i = header + 1
    while i < len(lines) and lines[i].startswith("  "):
        if lines[i].split(":")[0].strip() in CONFIG_KEYS:
            out.append(lines[i])
        i += 1
    first = next(j for j in range(i, len(lines)) if re.search(r": Epoch 0$", lines[j]))
    stop = next((j for j in range(first, len(lines)) if re.search(rf": Epoch {EXCERPT_EPOCHS}$", lines[j])), None)
    body = [line for line in lines[first:stop] if _strip_timestamp(line).strip()]
    return "\n".join(out + body)


def caption(log_text: str, log: dict) -> str:
    """The figure's caption, from what the run did (training is not bit-reproducible: each run says its own)."""
    phases = re.findall(r": Current learning rate: \S+ \((warmup|plateau phase|final anneal)", log_text)
    cuts = len(re.findall(r": ReduceLROnPlateau: ", log_text))
    clip = CONFIG.get("grad_clip_norm", 2.0)
    clipped = sum(1 for m in re.findall(r"clip at \S+\): mean \S+, max (\S+);", log_text) if float(m) > clip)
    plateau = (
        "stays at `initial_lr` through the plateau phase (the EMA of the validation loss kept improving, so the "
        "plateau never cut it)"
        if cuts == 0
        else f"is cut {cuts} time{'s' * (cuts > 1)} in the plateau phase (each cut a `ReduceLROnPlateau` line)"
    )
    losses, dice = log["train_losses"], log["ema_fg_dice"]
    trend = [
        "the loss of the default terms falls" if losses[-1] < losses[0] else "the loss does not fall",
        "the EMA pseudo Dice climbs" if dice[-1] > dice[0] else "the EMA pseudo Dice does not climb",
    ]
    text = (
        f"*The run of the log above, to its end (`{TOPO_TRAINER}` with the configuration `CONFIG` of "
        f"[`docs/make_examples.py`](../make_examples.py): {len(phases)} short epochs on 8 synthetic cases of 64³, "
        f"CPU): the LR ramps over the {phases.count('warmup')} warmup epochs, {plateau} and anneals over the last "
        f"{phases.count('final anneal')} epochs; {trend[0]}, the gradient norm's maximum passes the clip level in "
        f"{clipped} of the {len(phases)} epochs (those steps were clipped), and {trend[1]}.*"
    )
    return textwrap.fill(text, width=118, break_long_words=False, break_on_hyphens=False)


def replace_between(page: str, start: str, end: str, text: str) -> str:
    before, found, rest = page.partition(start)
    if not found or end not in rest:
        sys.exit(f"{PAGE}: no {start} ... {end} markers")
    return f"{before}{start}\n{text}\n{end}{rest.partition(end)[2]}"


def write_page(excerpt_text: str, caption_text: str) -> None:
    page = replace_between(PAGE.read_text(), START, END, f"\n```\n{excerpt_text}\n```\n")
    PAGE.write_text(replace_between(page, CAPTION_START, CAPTION_END, caption_text))


def write_figure(fold: Path) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    log, source = load_progress(fold)
    with tempfile.TemporaryDirectory() as tmp:
        drawn = plot_progress_topo(log, Path(tmp) / "progress_topo.png")
        info = PngInfo()
        info.add_text("Software", SCRIPT)
        info.add_text("Source", f"{TOPO_TRAINER}, {len(log['train_losses'])} epochs, {source.name}")
        with Image.open(drawn) as image:
            image.save(FIGURE, pnginfo=info, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nnunetv2_topo_docs_example")
    parser.add_argument("--reuse", action="store_true", help="keep a finished run in --work")
    args = parser.parse_args()
    fold = train(args.work, args.reuse)
    log_file = max(fold.glob("training_log_*.txt"))
    log, _ = load_progress(fold)
    write_page(excerpt(log_file.read_text()), caption(log_file.read_text(), log))
    write_figure(fold)
    shutil.copy(log_file, args.work / "training_log.txt")
    print(f"wrote {FIGURE.relative_to(DOCS.parent)} and the excerpt in {PAGE.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
