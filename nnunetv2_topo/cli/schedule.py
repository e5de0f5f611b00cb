"""``nnunetv2_topo schedule --log TRAINING_LOG``: replay the TopoWarmup LR schedule on a recorded training log."""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnunetv2_topo.cli.arguments import rename_flag
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.io import atomic_path, atomic_write_text
from nnunetv2_topo.output_checks import check_output_file

if TYPE_CHECKING:
    from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

HELP = "replay the TopoWarmup LR schedule (warmup -> plateau -> final anneal) on an nnU-Net training log"
DESCRIPTION = f"""{HELP}.

Check a schedule on last month's log before spending GPU days on it, or see what a TopoWarmup run did. The
replay runs the trainer's own plateau driver (nnunetv2_topo.scheduling.PlateauDriver), built from:

  a TopoWarmup run's own log (no --topo-config, no --trainer): the effective configuration each start printed, from
      the epoch it took effect; a run resumed with a larger num_epochs (or a change allowed by
      allow_config_change) is replayed as the trainer resumed it, so the replayed LR is the LR of every epoch
  --topo-config FILE / --trainer NAME: the configuration the trainer would resolve: the defaults of --trainer (default
      nnUNetTrainerTopoWarmup), overridden by the YAML you would point nnUNet_topo_config at (the variable itself
      is not read here); for nnU-Net's own logs, or to try another configuration on a log

Epoch by epoch it feeds the signal the trainer would watch (plateau_metric), read from the log's lines:

  val_loss, val_loss_ema   the 'val_loss' lines (rounded to 4 decimals by nnU-Net; the EMA is computed as the
                           trainer computes it)
  ema_fg_dice              the 'Pseudo dice' lines (nnU-Net's EMA 0.9/0.1 of their mean)
  val_score                the 'Competition score of epoch E' lines of a TopoWarmup run with scoring rounds

The log may come from nnU-Net's own trainer or a TopoWarmup trainer (the LR it actually used plays no role).
A resumed run writes one log per start: pass them all (--log fold_0/training_log_*.txt). After the log ends, the signal
holds its last value up to --num-epochs (default: the (last) configuration's num_epochs).

Prints the epochs of every LR cut, where the LR reaches plateau_min_lr, where the final anneal starts and what
each restart of the run changed (an extension: the LR it continued at, where the anneal moved).

examples:
  nnunetv2_topo schedule --log fold_0/training_log_*.txt          # a TopoWarmup run, from its own logs
  nnunetv2_topo schedule --log fold_0/training_log_2026_1_7_21_20_00.txt --trainer nnUNetTrainerTopoWarmup
  nnunetv2_topo schedule --log fold_0/training_log_*.txt --topo-config my_config.yaml --json lr.json --plot lr.png
  nnunetv2_topo schedule --log old.txt --trainer nnUNetTrainerTopoWarmup_250epochs
"""

BASE_TRAINER = "nnUNetTrainerTopoWarmup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", action="extend", nargs="+", required=True, metavar="TRAINING_LOG",
                        help="nnU-Net's fold_X/training_log_*.txt; several files (a resumed run writes one per "
                        "start) are read as one run")  # fmt: skip
    parser.add_argument("--topo-config", metavar="FILE", help="trainer configuration YAML (the keys of "
                        "nnUNet_topo_config) instead of the configuration the log printed")  # fmt: skip
    rename_flag(parser, "--config", "--topo-config")
    parser.add_argument("--trainer", metavar="NAME", help=f"TopoWarmup trainer whose defaults to start from instead "
                        f"of the configuration the log printed (default with --topo-config or a log without one: "
                        f"{BASE_TRAINER})")  # fmt: skip
    parser.add_argument("--num-epochs", type=int, metavar="N", help="epochs to replay (default: num_epochs of the "
                        "(last) configuration); the final anneal is placed at the end of these N epochs")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help='write {"lr": [LR of epoch 0, 1, ...], "cuts": [epochs], '
                        '"min_lr_epoch": epoch or null, "stop_epoch": epoch or null}; the LRs run to --num-epochs '
                        "also after an early stop (what the schedule would do without it)")  # fmt: skip
    parser.add_argument("--plot", metavar="PNG", help="draw the signal and the LR (log axis) into this PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json or --plot file")


def _trainer_class(name: str) -> type[nnUNetTrainerTopoWarmup]:
    import nnunetv2_topo.trainers as trainers

    topo = getattr(trainers, BASE_TRAINER)
    names = _topo_names()
    cls = getattr(trainers, name, None) if name in trainers.__all__ else None
    if cls is None:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CLIError(f"--trainer {name}: unknown trainer{hint}. TopoWarmup trainers: {', '.join(names)}")
    if not issubclass(cls, topo):
        raise CLIError(
            f"--trainer {name}: uses nnU-Net's poly schedule, not the TopoWarmup plateau; nothing to replay. Choose "
            f"one of {', '.join(names)}"
        )
    return cls


def _all_trainer_names() -> list[str]:
    import nnunetv2_topo.trainers as trainers

    return list(trainers.__all__)


def _topo_names() -> list[str]:
    import nnunetv2_topo.trainers as trainers

    topo = getattr(trainers, BASE_TRAINER)
    return [n for n in trainers.__all__ if issubclass(getattr(trainers, n), topo)]


def _plot(path: str, signal_name: str, signal: list[float], lrs: list[float], cuts: list[int], title: str,
          raw: list[float] | None = None, stop: int | None = None) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    if raw is not None:
        ax.plot(range(len(raw)), raw, color="tab:gray", lw=0.5, alpha=0.6, label="val_loss")
    ax.plot(range(len(signal)), signal, color="tab:red", lw=0.8, label=signal_name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(signal_name)
    ax2 = ax.twinx()
    ax2.plot(range(len(lrs)), lrs, color="tab:blue", lw=1.5, label="learning rate")
    ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    for cut in cuts:
        ax2.axvline(cut + 1, color="tab:blue", lw=0.5, ls=":")
    if stop is not None:
        ax2.axvline(stop + 1, color="black", lw=1.0, ls="--", label=f"early stop (after epoch {stop})")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@dataclass
class _Setup:
    """The log and the configuration(s) to replay it with, checked."""

    log: Any
    config: dict
    restarts: list[tuple[int, dict]]
    last: dict  # the configuration in force at the end (its num_epochs, metric and anneal)
    title: str
    warnings: list[str]
    names: str
    dice: list[float]


def run(args: argparse.Namespace) -> int:
    from nnunetv2_topo.scheduling.replay import replay

    setup = _check(args)
    result = replay(setup.config, setup.log.val_loss, ema_fg_dice=setup.dice, score_rounds=setup.log.score_rounds,
                    num_epochs=setup.last["num_epochs"], restarts=setup.restarts)  # fmt: skip
    _report(setup, result)
    _write(args, setup, result)
    return 0


def _check(args: argparse.Namespace) -> _Setup:
    """The flags, the outputs, the log and the configuration: every refusal before the replay."""
    from nnunetv2_topo.scheduling.training_log import read_training_logs
    from nnunetv2_topo.trainers.config import check_consistency

    if args.num_epochs is not None and args.num_epochs < 1:
        raise CLIError(f"--num-epochs {args.num_epochs}: must be >= 1")
    if args.topo_config is not None and not Path(args.topo_config).is_file():
        raise CLIError(f"--topo-config {args.topo_config}: no such file")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_file(path, args.overwrite, flag)
    log = read_training_logs(args.log)  # a TrainingLogError (a TopoError) is one line from main()
    config, restarts, title = _configurations(args, log)
    last = restarts[-1][1] if restarts else config
    if args.num_epochs is not None:
        last["num_epochs"] = args.num_epochs
    warnings = check_consistency(last, args.topo_config or title)
    metric = last["plateau_metric"]
    names = ", ".join(args.log)
    if metric == "val_score" and not log.score_rounds:
        raise CLIError(
            f"{names}: plateau_metric is val_score but the log has no 'Competition score of epoch' lines (a "
            "TopoWarmup run with score_every_epochs > 0 writes them); replay with another plateau_metric"
        )
    dice = log.ema_fg_dice()
    if metric == "ema_fg_dice" and not any(d == d for d in dice):
        raise CLIError(f"{names}: plateau_metric is ema_fg_dice but the log has no readable 'Pseudo dice' lines")
    return _Setup(log, config, restarts, last, title, warnings, names, dice)


def _configurations(args: argparse.Namespace, log) -> tuple[dict, list[tuple[int, dict]], str]:
    """``(configuration, restarts, title)``: each start's printed configuration (a TopoWarmup log without
    --topo-config/--trainer), else the defaults of --trainer overridden by --topo-config."""
    from nnunetv2_topo.trainers.config import logged_config
    from nnunetv2_topo.trainers.config_file import config_from_file

    if args.topo_config is None and args.trainer is None and log.configs:
        configs = [(epoch, logged_config(values, f"{args.log[0]} (start at epoch {epoch})")) for epoch, _,
                   values in log.configs]  # fmt: skip
        name = log.configs[-1][1]
        if name in _all_trainer_names() and name not in _topo_names():
            _trainer_class(name)  # nnU-Net's poly schedule: the error says so
        return configs[0][1], configs[1:], f"{name} (the configuration its log printed)"
    cls = _trainer_class(args.trainer or BASE_TRAINER)
    config = config_from_file(
        args.topo_config,
        cls.merged_topo_defaults(),
        variant_name=f"{cls.__name__}.topo_defaults",
        fixed_keys=cls.topo_fixed_keys,
    )
    return config, [], f"{cls.__name__}{' + ' + args.topo_config if args.topo_config else ''}"


def _report(setup: _Setup, result) -> None:
    from nnunetv2_topo.scheduling.plateau_driver import final_anneal_epochs

    config, last, log, n = setup.config, setup.last, setup.log, setup.last["num_epochs"]
    base = config["initial_lr"]
    for warning in setup.warnings:
        print(f"note (configuration): {warning}")
    settings = ", ".join(f"{k.removeprefix('plateau_')} {config[k]}" for k in config if k.startswith("plateau_"))
    print(f"{setup.title}: initial_lr {base}, warmup {config['warmup_epochs']} epochs, {settings}")
    for epoch, _ in setup.restarts:
        notes = [note for at, note in result.notes if at == epoch] or ["the run continues unchanged"]
        for note in notes:
            print(f"restart at epoch {epoch}: {note}")
    print(f"log: {len(log.val_loss)} epochs of val_loss from {setup.names}"
          + (f"; held at its last value up to epoch {n - 1}" if n > len(log.val_loss) else ""))  # fmt: skip
    if result.cuts:
        print(f"{len(result.cuts)} LR cuts (after the validation of epoch -> LR from the next epoch):")
        for cut in result.cuts:
            after = result.lr[cut + 1] if cut + 1 < n else float("nan")
            print(f"  epoch {cut:>5}: {result.lr[cut]:.4g} -> {after:.4g}")
    else:
        print("no LR cut")
    if result.min_lr_epoch is not None:
        print(f"the LR reaches plateau_min_lr {config['plateau_min_lr']:g} at epoch {result.min_lr_epoch}")
    else:
        print(f"the LR never reaches plateau_min_lr {config['plateau_min_lr']:g}")
    anneal = final_anneal_epochs(last)
    if anneal:
        start = max(n - anneal, last["warmup_epochs"])
        print(f"final anneal: epochs {start}-{n - 1} (from {result.lr[start]:.4g} to {result.lr[-1]:.4g})")
    if result.stop_epoch is not None:
        print(f"early stop: the trainer stops after epoch {result.stop_epoch} (the LR sat at plateau_min_lr without "
              "improvement for more than plateau_patience epochs; plateau_early_stop: false trains on)")  # fmt: skip
    high = sum(lr >= 0.1 * base for lr in result.lr)
    print(f"{high}/{n} epochs ({100.0 * high / n:.0f} %) at >= 10 % of initial_lr")


def _write(args: argparse.Namespace, setup: _Setup, result) -> None:
    """--json and --plot."""
    from nnunetv2_topo.scheduling.plateau_driver import smoothed

    if args.json:
        payload = {"lr": result.lr, "cuts": result.cuts, "min_lr_epoch": result.min_lr_epoch,
                   "stop_epoch": result.stop_epoch}  # fmt: skip
        atomic_write_text(args.json, json.dumps(payload) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        log, last, n = setup.log, setup.last, setup.last["num_epochs"]
        metric = last["plateau_metric"]
        held = log.val_loss + [log.val_loss[-1]] * max(0, n - len(log.val_loss))
        ema = [float("nan")]
        for value in held[:n]:
            ema.append(smoothed(ema[-1], value, last["plateau_ema_smoothing"]))
        signal = {"val_loss": held[:n], "val_loss_ema": ema[1:]}
        shown = signal.get(metric, held[:n])
        _plot(args.plot, metric if metric in signal else "val_loss", shown, result.lr, result.cuts,
              f"{setup.title}: {len(result.cuts)} cuts; {setup.names}",
              raw=held[:n] if metric == "val_loss_ema" else None, stop=result.stop_epoch)  # fmt: skip
        print(f"wrote {args.plot}")
