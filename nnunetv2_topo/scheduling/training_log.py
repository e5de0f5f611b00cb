"""Read the per-epoch validation signals from nnU-Net's ``training_log_*.txt`` (also those of the TopoWarmup
trainers, which write the same lines through nnU-Net's ``print_to_log_file``).

nnU-Net writes, per epoch (timestamps first, values rounded to 4 decimals)::

    2026-08-26 17:03:11.123456: Epoch 12
    2026-08-26 17:03:11.223456: Current learning rate: 0.00931
    2026-08-26 17:08:11.323456: train_loss -0.6412
    2026-08-26 17:08:11.423456: val_loss -0.5883
    2026-08-26 17:08:11.523456: Pseudo dice [np.float32(0.8123), np.float32(0.0)]
    2026-08-26 17:08:11.623456: Epoch time: 301.4 s

and a TopoWarmup scoring round adds ``Competition score of epoch E (... applied after epoch A): score S, ...``.
Every start of a TopoWarmup trainer first prints its effective configuration (``NAME configuration (...):`` and one
``  key : JSON value`` line per key); :attr:`TrainingLog.configs` holds each with the epoch it took effect.
A resumed run (``--c``) writes a new log file that starts at the resumed epoch: pass every file of the run.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2_topo.errors import TopoError

__all__ = ["TrainingLog", "TrainingLogError", "read_training_logs"]

_EPOCH = re.compile(r":\s*Epoch (\d+)\s*$")
_VAL_LOSS = re.compile(r":\s*val_loss\s+(\S+)\s*$")
_PSEUDO_DICE = re.compile(r":\s*Pseudo dice\s+\[(.*)\]\s*$")
_SCORE = re.compile(r"Competition score of epoch (\d+) \(.*applied after epoch (\d+)\): score (\S+?),")
_CONFIG_HEADER = re.compile(r"^(\w+) configuration \(.*\):\s*$")
_CONFIG_LINE = re.compile(r"^  (\w+)\s*: (.*)$")
_NUMBER = re.compile(r"(?:np\.float\d+\()?\s*(-?(?:nan|inf|\d+(?:\.\d*)?(?:e-?\d+)?))\)?", re.IGNORECASE)


class TrainingLogError(TopoError, ValueError):
    """A training log that cannot be replayed (names the file and what is missing)."""


@dataclass
class TrainingLog:
    """Per-epoch signals of one training run (epoch i at index i)."""

    val_loss: list[float]
    mean_fg_dice: list[float]
    """Mean of the ``Pseudo dice`` line per epoch (NaN where absent)."""
    score_rounds: list[tuple[int, int, float]] = field(default_factory=list)
    """``(scored epoch, applied after epoch, score)`` of every TopoWarmup scoring round."""
    sources: list[str] = field(default_factory=list)
    configs: list[tuple[int, str, dict[str, object]]] = field(default_factory=list)
    """``(first epoch, trainer name, {key: value})`` of every start that trained at least one epoch, in epoch
    order (a start from an older checkpoint replaces the starts it repeats)."""

    def ema_fg_dice(self) -> list[float]:
        """nnU-Net's ``ema_fg_dice``: ``0.9 * previous + 0.1 * mean_fg_dice`` (the first epoch: its value)."""
        out: list[float] = []
        for value in self.mean_fg_dice:
            out.append(value if not out else 0.9 * out[-1] + 0.1 * value)
        return out


def _number(text: str) -> float:
    m = _NUMBER.fullmatch(text.strip().rstrip(","))
    if not m:
        raise ValueError(text)
    return float(m.group(1))


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def _read_one(
    path: Path, configs: list[tuple[int, str, dict[str, object]]]
) -> tuple[dict[int, float], dict[int, float], list[tuple[int, int, float]]]:
    """The per-epoch values of one file; its configuration blocks are added to ``configs`` (see
    :attr:`TrainingLog.configs`)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise TrainingLogError(f"{path}: no such file (pass nnU-Net's fold_X/training_log_*.txt)") from None
    except IsADirectoryError:
        raise TrainingLogError(f"{path}: is a folder; pass one of its training_log_*.txt files") from None
    except OSError as exc:
        raise TrainingLogError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    epoch: int | None = None
    val_loss: dict[int, float] = {}
    dice: dict[int, float] = {}
    rounds: list[tuple[int, int, float]] = []
    pending: tuple[str, dict[str, object]] | None = None  # a configuration block not yet followed by an epoch
    block: dict[str, object] | None = None
    for number, line in enumerate(lines, 1):
        if block is not None:
            if m := _CONFIG_LINE.match(line):
                block[m.group(1)] = _value(m.group(2))
                continue
            block = None
        if m := _CONFIG_HEADER.match(line):
            block = {}
            pending = (m.group(1), block)
        elif m := _EPOCH.search(line):
            epoch = int(m.group(1))
            if pending is not None:
                configs[:] = [c for c in configs if c[0] < epoch] + [(epoch, *pending)]
                pending = None
        elif m := _VAL_LOSS.search(line):
            if epoch is None:
                raise TrainingLogError(f"{path}, line {number}: a val_loss line before any 'Epoch N' line")
            try:
                val_loss[epoch] = _number(m.group(1))
            except ValueError:
                raise TrainingLogError(f"{path}, line {number}: val_loss {m.group(1)!r} is not a number") from None
        elif (m := _PSEUDO_DICE.search(line)) and epoch is not None:
            try:
                values = [_number(v) for v in m.group(1).split(",") if v.strip()]
            except ValueError:
                continue  # an unexpected Pseudo dice format only matters for plateau_metric: ema_fg_dice
            finite = [v for v in values if math.isfinite(v)]
            dice[epoch] = sum(finite) / len(finite) if finite else math.nan
        elif m := _SCORE.search(line):
            try:
                rounds.append((int(m.group(1)), int(m.group(2)), _number(m.group(3))))
            except ValueError:
                continue
    return val_loss, dice, rounds


def read_training_logs(paths: list[str | os.PathLike]) -> TrainingLog:
    """The signals of one run from its log files (a resumed run's later files override the epochs they repeat).

    Raises :class:`TrainingLogError` naming the file when a file cannot be read, holds no ``val_loss`` line, or the
    epochs have a gap or do not start at 0.
    """
    val_loss: dict[int, float] = {}
    dice: dict[int, float] = {}
    rounds: dict[int, tuple[int, int, float]] = {}
    configs: list[tuple[int, str, dict[str, object]]] = []
    for p in paths:
        path = Path(p)
        v, d, r = _read_one(path, configs)
        if not v:
            raise TrainingLogError(
                f"{path}: no 'val_loss' lines (is it nnU-Net's fold_X/training_log_*.txt of a run that finished at "
                "least one epoch?)"
            )
        val_loss.update(v)
        dice.update(d)
        rounds.update({scored: (scored, applied, score) for scored, applied, score in r})
    names = ", ".join(str(p) for p in paths)
    first, last = min(val_loss), max(val_loss)
    if first != 0:
        raise TrainingLogError(
            f"{names}: the val_loss lines start at epoch {first}, not 0 (a resumed run's log): pass the earlier "
            "training_log_*.txt of the run too"
        )
    missing = [e for e in range(last + 1) if e not in val_loss]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise TrainingLogError(f"{names}: no val_loss for epochs {shown} (pass every training_log_*.txt of the run)")
    return TrainingLog(
        val_loss=[val_loss[e] for e in range(last + 1)],
        mean_fg_dice=[dice.get(e, math.nan) for e in range(last + 1)],
        score_rounds=sorted(rounds.values()),
        sources=[str(p) for p in paths],
        configs=configs,
    )
