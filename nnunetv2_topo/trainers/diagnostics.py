"""What a person looks at when asking "why is it not learning?": per-epoch statistics and ``progress_topo.png``.

The trainer logs these keys with nnU-Net's own logger (one value per epoch):

* ``train_loss_<term>`` / ``val_loss_<term>`` for every loss term with a positive weight,
* ``grad_norm_mean`` / ``grad_norm_max``: total gradient norm before clipping (finite steps),
* ``skipped_steps``: steps skipped because the loss or gradient norm was not finite,
* ``loss_weight_<term>``: the effective weight of every weighted term (``loss_schedule``), drawn on the LR panel,
* ``val_score`` (and ``val_score_topo``, ``val_score_surface_dice``, ``val_score_voi``): the competition score of a
  scoring round at the epoch whose weights were scored, NaN at the other epochs (``score_every_epochs``),

next to nnU-Net's ``train_losses``, ``val_losses``, ``lrs``, ``mean_fg_dice`` and ``ema_fg_dice``.

Rank 0 writes ``progress_topo.json`` every epoch (milliseconds) and draws ``progress_topo.png`` every
:data:`PLOT_EVERY_EPOCHS` epochs and after the last one (the drawing grows with the epochs, and the other ranks wait
for it); ``nnunetv2_topo plot`` draws it from the JSON at any time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.io import atomic_path, atomic_write_text

__all__ = [
    "ProgressLogError",
    "ProgressLogMissingError",
    "PLOT_EVERY_EPOCHS",
    "PROGRESS_JSON",
    "PROGRESS_PNG",
    "TOPO_LOG_KEYS",
    "console_log",
    "finite_mean_max",
    "load_progress",
    "plot_due",
    "plot_progress_topo",
    "term_names_in",
    "write_progress_json",
]


class ProgressLogError(TopoError, ValueError):
    """A fold's training log that cannot be read (the message names the file and the cause)."""


class ProgressLogMissingError(TopoError, FileNotFoundError):
    """A fold folder without a training log to read (the message names the folder and what it lacks)."""


PROGRESS_PNG = "progress_topo.png"
PROGRESS_JSON = "progress_topo.json"
TOPO_LOG_KEYS = ("grad_norm_mean", "grad_norm_max", "skipped_steps")
PLOT_EVERY_EPOCHS = 10
"""The trainer draws ``progress_topo.png`` after epochs 0, 10, 20, ... and after the last (its ``plot_every``)."""


def plot_due(epoch: int, every: int = PLOT_EVERY_EPOCHS) -> bool:
    """``progress_topo.png`` is drawn after ``epoch`` (besides the last epoch)."""
    return epoch % max(1, int(every)) == 0


def finite_mean_max(values: Iterable[float]) -> tuple[float, float]:
    """Mean and max of the finite values (``nan, nan`` when there are none)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    return sum(finite) / len(finite), max(finite)


def term_names_in(log: Mapping[str, Sequence[Any]]) -> list[str]:
    """Loss terms that have a ``train_loss_<term>`` entry in the log, in a stable order."""
    return sorted(k[len("train_loss_") :] for k in log if k.startswith("train_loss_"))


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _jsonable_log(log: Mapping[str, Sequence[Any]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for key, values in log.items():
        items: list[Any] = []
        for v in values:
            if isinstance(v, (list, tuple)):
                items.append([_as_float(i) for i in v])
            else:
                f = _as_float(v)
                items.append(f if math.isfinite(f) else None)
        out[key] = items
    return out


def write_progress_json(log: Mapping[str, Sequence[Any]], output_folder: str | os.PathLike) -> Path:
    """Dump the logger's lists to ``progress_topo.json`` (atomic), for ``nnunetv2_topo plot``."""
    path = Path(output_folder) / PROGRESS_JSON
    atomic_write_text(path, json.dumps(_jsonable_log(log)))
    return path


def load_progress(fold_dir: str | os.PathLike, use_json: bool = True) -> tuple[dict[str, list], Path]:
    """The training log of a fold folder: ``progress_topo.json`` if present (and ``use_json``), else the newest
    checkpoint's log.

    Raises :class:`ProgressLogMissingError` (a ``FileNotFoundError``) naming the folder when neither exists,
    :class:`ProgressLogError` (a ``ValueError``) naming the file when
    ``progress_topo.json`` is not a JSON object (truncated, corrupt).
    """
    folder = Path(fold_dir)
    if not folder.is_dir():
        raise ProgressLogMissingError(f"{folder} is not a folder (expected an nnU-Net fold_X output folder)")
    progress = folder / PROGRESS_JSON
    if use_json and progress.is_file():
        try:
            log = json.loads(progress.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProgressLogError(f"{progress}: not valid JSON ({exc})") from None
        if not isinstance(log, dict):
            raise ProgressLogError(f"{progress}: expected a JSON object, got {type(log).__name__}")
        return log, progress
    candidates = [folder / n for n in ("checkpoint_latest.pth", "checkpoint_final.pth", "checkpoint_best.pth")]
    candidates = [c for c in candidates if c.is_file()]
    if not candidates:
        raise ProgressLogMissingError(
            f"{folder} has neither {PROGRESS_JSON} nor a checkpoint_{{latest,final,best}}.pth to read the log from"
        )
    import torch  # only to read a checkpoint's log: progress.json alone is read without torch

    best: tuple[int, dict, Path] | None = None
    for c in candidates:
        try:
            ckpt = torch.load(c, map_location="cpu", weights_only=False, mmap=True)
        except Exception as exc:  # a truncated/corrupt checkpoint: torch raises many types
            raise ProgressLogError(f"{c}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
        epoch = int(ckpt.get("current_epoch", 0))
        if best is None or epoch > best[0]:
            best = (epoch, ckpt["logging"], c)
    assert best is not None
    return _jsonable_log(best[1]), best[2]


def _series(log: Mapping[str, Sequence[Any]], key: str, n: int) -> list[float]:
    values = list(log.get(key, []))[:n]
    return [_as_float(v) if v is not None else math.nan for v in values]


def plot_progress_topo(log: Mapping[str, Sequence[Any]], output_file: str | os.PathLike) -> Path:
    """Draw ``progress_topo.png``: per-term losses (train solid, val dashed), LR (log axis), gradient norm (log
    axis, with skipped steps), pseudo Dice and the competition score of the scoring rounds. Written atomically;
    returns the path."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    # nnU-Net's own progress plot sets seaborn's font_scale=2.5 for the whole process; draw with plain sizes
    with plt.rc_context(
        {
            "font.size": 11,
            "axes.titlesize": 13,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
        }  # fmt: skip
    ):
        return _draw_progress_topo(plt, log, output_file)


def _draw_progress_topo(plt: Any, log: Mapping[str, Sequence[Any]], output_file: str | os.PathLike) -> Path:
    n = len(log.get("train_losses", []))
    for key in ("val_losses", "lrs"):
        n = min(n, len(log.get(key, [])))
    epochs = list(range(n))
    fig, axes = plt.subplots(2, 2, figsize=(16, 10), constrained_layout=True)
    ax_loss, ax_lr, ax_grad, ax_dice = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]

    terms = term_names_in(log)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax_loss.plot(epochs, _series(log, "train_losses", n), color="black", lw=2.5, label="total train")
    ax_loss.plot(epochs, _series(log, "val_losses", n), color="black", lw=2.5, ls="--", label="total val")
    for i, term in enumerate(terms):
        c = colors[i % len(colors)]
        ax_loss.plot(epochs, _series(log, f"train_loss_{term}", n), color=c, lw=1.5, label=f"{term} train")
        if f"val_loss_{term}" in log:
            ax_loss.plot(epochs, _series(log, f"val_loss_{term}", n), color=c, lw=1.5, ls="--", label=f"{term} val")
    if not terms:
        ax_loss.text(0.5, 0.5, "no per-term losses in this log", transform=ax_loss.transAxes, ha="center")
    ax_loss.set_title("loss per term (solid: train, dashed: validation)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=10, ncol=2)

    lrs = _series(log, "lrs", n)
    ax_lr.plot(epochs, lrs, color="tab:blue", lw=2, marker="." if n < 50 else None)
    if any(v > 0 for v in lrs if math.isfinite(v)):
        ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate (log axis)")
    ax_lr.set_xlabel("epoch")
    _draw_loss_weights(ax_lr, log, epochs, colors)

    if "grad_norm_mean" in log:
        gmean, gmax = _series(log, "grad_norm_mean", n), _series(log, "grad_norm_max", n)
        ax_grad.plot(epochs, gmean, color="tab:green", lw=2, label="mean (pre-clip)")
        ax_grad.plot(epochs, gmax, color="tab:red", lw=1.5, label="max (pre-clip)")
        if any(v > 0 for v in gmean + gmax if math.isfinite(v)):
            ax_grad.set_yscale("log")
        skipped = _series(log, "skipped_steps", n)
        if any(v > 0 for v in skipped if math.isfinite(v)):
            ax_skip = ax_grad.twinx()
            ax_skip.bar(epochs, skipped, color="tab:orange", alpha=0.4, label="skipped steps")
            ax_skip.set_ylabel("skipped steps (non-finite)")
            ax_skip.legend(loc="upper right", fontsize=10)
        ax_grad.legend(loc="upper left", fontsize=10)
    else:
        ax_grad.text(0.5, 0.5, "no gradient-norm statistics in this log", transform=ax_grad.transAxes, ha="center")
    ax_grad.set_title("total gradient norm before clipping (log axis)")
    ax_grad.set_xlabel("epoch")

    ax_dice.plot(epochs, _series(log, "mean_fg_dice", n), color="tab:green", ls=":", lw=1.5, label="pseudo Dice")
    ax_dice.plot(epochs, _series(log, "ema_fg_dice", n), color="tab:green", lw=2.5, label="pseudo Dice (EMA)")
    score = _series(log, "val_score", n)
    if any(math.isfinite(v) for v in score):  # score_every_epochs: one point per scoring round, NaN between
        ax_dice.plot(epochs, score, color="tab:purple", lw=0, marker="o", label="competition score (val_score)")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_title("validation pseudo Dice (foreground) and competition score")
    ax_dice.set_xlabel("epoch")
    ax_dice.legend(fontsize=10)

    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_lr, ax_grad, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    out = Path(output_file)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out


def _draw_loss_weights(ax: Any, log: Mapping[str, Sequence[Any]], epochs: list[int], colors: list) -> None:
    """The effective loss weight of every term per epoch (``loss_weight_<term>``, the loss schedule) on a right
    axis of the LR panel."""
    keys = sorted(k for k in log if k.startswith("loss_weight_"))
    if not keys:
        return
    ax_w = ax.twinx()
    for i, key in enumerate(keys):
        ax_w.plot(epochs, _series(log, key, len(epochs)), color=colors[i % len(colors)], ls=":", lw=2,
                  label=key[len("loss_weight_") :])  # fmt: skip
    ax_w.set_ylabel("loss weight (dotted)")
    ax_w.legend(loc="lower right", fontsize=9, title="loss weights")
    ax.set_title("learning rate (log axis) and loss weights (right axis)")


def console_log(message: str, also_print_to_console: bool = True) -> None:
    """The default ``log`` of the trainer components used without a trainer (the trainer passes its
    ``print_to_log_file``, which takes the same arguments)."""
    if also_print_to_console:
        print(message)
