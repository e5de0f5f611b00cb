"""Hyperparameters of the TopoWarmup trainers: the keys (defaults, parsers, checks), their resolution and the
relations between them.

``nnUNet_topo_config=/path/to/config.yaml`` overrides any key below for any TopoWarmup trainer
(:mod:`nnunetv2_topo.trainers.config_file` reads it). Precedence: base defaults < the variant's ``topo_defaults`` <
the YAML file. ``loss_weights`` is replaced as a whole (terms not listed get weight 0). Every problem fails at
start-up with a message naming the file, key and value, and listing the valid keys.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.evaluation.scoring_pool import DEFAULT_CASE_TIMEOUT_S
from nnunetv2_topo.losses.registry import TERMS, check_weights, term_params
from nnunetv2_topo.losses.schedule import parse_loss_schedule
from nnunetv2_topo.scheduling.plateau_driver import PLATEAU_METRICS, PLATEAU_MODES
from nnunetv2_topo.setting_checks import Checked
from nnunetv2_topo.setting_checks import at_least_one as _at_least_one
from nnunetv2_topo.setting_checks import boolean as _boolean
from nnunetv2_topo.setting_checks import half_open_unit as _half_open_unit
from nnunetv2_topo.setting_checks import integer as _integer
from nnunetv2_topo.setting_checks import non_negative as _non_negative
from nnunetv2_topo.setting_checks import number as _number
from nnunetv2_topo.setting_checks import open_unit as _open_unit
from nnunetv2_topo.setting_checks import positive as _positive
from nnunetv2_topo.trainers.config_text import format_config, to_jsonable
from nnunetv2_topo.trainers.lr_defaults import fill_null_lrs, null_meaning

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_LOSS_WEIGHTS",
    "FIVE_TERM_LOSS_WEIGHTS",
    "KEYS",
    "DIRECTIVE_KEYS",
    "PLATEAU_METRICS",
    "PLATEAU_MODES",
    "TopoConfigError",
    "check_consistency",
    "all_keys",
    "format_config",
    "resolve_config",
    "to_jsonable",
]

CONFIG_ENV_VAR = "nnUNet_topo_config"

FIVE_TERM_LOSS_WEIGHTS: dict[str, float] = {
    "dice": 0.3,
    "focal": 0.4,
    "boundary": 0.15,
    "cldice": 0.10,
    "dilated_mse": 0.05,
}
"""The original five-term recipe this trainer started from (``nnUNetTrainerTopoWarmup_FiveTerm``; the default
until the benchmark below replaced it)."""

DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"ce": 1.0, "dice": 1.0, "cldice": 0.5}
"""The default ``loss_weights``: the best setting measured by ``benchmarks/variants.py`` against nnUNetTrainer on
the competition score (``benchmarks/results/trainers-variants.md``)."""


NULLABLE_KEYS = frozenset({"seed", "final_score_workers", "muon_other_lr", "initial_lr", "plateau_min_lr"})
"""Keys that accept ``null``: "off" (``seed``, ``final_score_workers``) or "follows other keys" (the LRs:
:mod:`~nnunetv2_topo.trainers.lr_defaults`). A loss term parameter's ``null`` means its default."""

DIRECTIVE_KEYS: dict[str, str] = {
    "allow_config_change": "true: a resumed run (--c) may change keys of its saved configuration (logged as a warning)",
}
"""Keys of a config file that steer how it is applied; they are not hyperparameters and are not saved."""


class TopoConfigError(TopoError, ValueError):
    """A bad TopoWarmup configuration (names the source, key, value and the fix)."""


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.lower()

    return parse


@dataclass(frozen=True)
class Key(Checked):
    """One configuration key: its parser, range check, default and meaning (the docs table is built from it)."""

    type_name: str
    default: Any
    meaning: str
    parse: Callable[[Any], Any]
    check: Callable[[Any], None] | None = None


KEYS: dict[str, Key] = {
    "initial_lr": Key("float > 0 | null", None, f"peak LR; {null_meaning('initial_lr')}", _number, _positive),
    "weight_decay": Key("float >= 0", 3e-5, "optimizer weight decay", _number, _non_negative),
    "num_epochs": Key("int >= 1", 1000, "number of epochs", _integer, _at_least_one),
    "num_iterations_per_epoch": Key("int >= 1", 250, "training iterations per epoch", _integer, _at_least_one),
    "num_val_iterations_per_epoch": Key(
        "int >= 1", 50, "validation iterations (patches batches) per epoch", _integer, _at_least_one
    ),
    "optimizer": Key(
        "sgd | adamw | muon",
        "muon",
        "sgd: nnU-Net's SGD (momentum 0.99, Nesterov); adamw: torch AdamW; muon: torch Muon for the hidden conv "
        "weights (as 2-D) at initial_lr, muon_other for the rest",
        _choice("sgd", "adamw", "muon"),
    ),
    "warmup_epochs": Key(
        "int >= 0", 10, "linear warmup lr = initial_lr*(epoch+1)/warmup_epochs; 0 = none", _integer, _non_negative
    ),
    "plateau_metric": Key(
        " | ".join(PLATEAU_METRICS),
        "val_loss_ema",
        "metric of ReduceLROnPlateau (val_loss, val_loss_ema: mode min; ema_fg_dice, val_score: mode max; "
        "val_score steps once per scoring round and needs score_every_epochs > 0)",
        _choice(*PLATEAU_METRICS),
    ),
    "plateau_ema_smoothing": Key(
        "float in [0, 1)",
        0.95,
        "val_loss_ema = s * previous + (1 - s) * val_loss of the epoch (EMA alpha = 1 - s; 0 = no smoothing)",
        _number,
        _half_open_unit,
    ),
    "plateau_patience": Key("int >= 0", 20, "epochs without improvement before a reduction", _integer, _non_negative),
    "plateau_threshold": Key(
        "float >= 0", 1e-3, "improvement of the metric needed to count as better", _number, _non_negative
    ),
    "plateau_threshold_mode": Key(
        "abs | rel",
        "abs",
        "abs: better = beyond best by plateau_threshold; rel: beyond best * (1 -+ plateau_threshold) (torch's rel; "
        "on a negative loss a slightly worse value counts as better)",
        _choice("abs", "rel"),
    ),
    "plateau_cooldown": Key(
        "int >= 0", 10, "epochs after a reduction before bad epochs count again", _integer, _non_negative
    ),
    "plateau_factor": Key("float in (0, 1)", 0.5, "LR multiplier on a plateau", _number, _open_unit),
    "plateau_min_lr": Key(
        "float >= 0 | null", None, f"the plateau's floor; {null_meaning('plateau_min_lr')}", _number, _non_negative
    ),
    "plateau_early_stop": Key(
        "bool",
        True,
        "end the run (as finished: checkpoint_final.pth, final validation) once the LR has sat at plateau_min_lr "
        "for more than plateau_patience epochs without improvement",
        _boolean,
    ),
    "plateau_final_anneal": Key(
        "float in [0, 1)",
        0.2,
        "the last round(f * num_epochs) epochs anneal linearly from the plateau's LR towards 0 (the plateau is not "
        "stepped then); 0 = off",
        _number,
        _half_open_unit,
    ),
    "grad_clip_norm": Key(
        "float > 0", 2.0, "clip the total gradient norm to this (after AMP unscale)", _number, _positive
    ),
    "grad_norm_log_every": Key(
        "int >= 1", 50, "print the pre-clip gradient norm every N iterations", _integer, _at_least_one
    ),
    "max_consecutive_skips": Key(
        "int >= 1", 20, "stop with an error after this many consecutive non-finite steps", _integer, _at_least_one
    ),
    "ema_decay": Key(
        "float in [0, 1)",
        0.0,
        "EMA of the weights, updated every step (e.g. 0.999); validated and saved as network_weights; 0 = off",
        _number,
        _half_open_unit,
    ),
    "seed": Key(
        "int >= 0 | null",
        None,
        "seeds torch, numpy and random (weight init, patch sampling, augmentation without DA workers); null = unseeded",
        _integer,
        _non_negative,
    ),
    "final_score_workers": Key(
        "int >= 1 | null",
        None,
        "at most this many Betti-matching workers for the final competition scoring (also capped by cores and "
        "free memory); null = the cap alone",
        _integer,
        _at_least_one,
    ),
    "score_every_epochs": Key(
        "int >= 0",
        0,
        "every N epochs predict score_num_cases validation cases (sliding window; under DDP each rank its share) and "
        "score them with the competition metric in a background process per rank: val_score, "
        "checkpoint_best_score.pth; 0 = off",
        _integer,
        _non_negative,
    ),
    "score_num_cases": Key(
        "int >= 1",
        4,
        "validation cases per scoring round (a subset fixed by seed 0; all of them when the fold has fewer)",
        _integer,
        _at_least_one,
    ),
    "score_mirroring": Key(
        "bool", False, "mirroring test-time augmentation in the scoring rounds (8x the prediction time)", _boolean
    ),
    "score_case_timeout_s": Key(
        "float > 0",
        DEFAULT_CASE_TIMEOUT_S,
        "deadline of one case in the background scoring process: a case still running after this many seconds is "
        "killed, its round fails (val_score NaN, not compared with the best) and training goes on with a new process",
        _number,
        _positive,
    ),
    "muon_other": Key(
        "adamw | sgd",
        "adamw",
        "optimizer: muon: the optimizer of the first conv, norms, biases and heads (adamw decoupled, sgd momentum "
        "0.99 Nesterov; both with weight_decay)",
        _choice("adamw", "sgd"),
    ),
    "muon_other_lr": Key(
        "float > 0 | null",
        None,
        "optimizer: muon: peak LR of the muon_other group (it follows the schedule as lr * muon_other_lr / "
        f"initial_lr); {null_meaning('muon_other_lr')}",
        _number,
        _positive,
    ),
    "muon_weight_decay": Key(
        "float >= 0", 0.1, "optimizer: muon: Muon's decoupled weight decay (torch's default)", _number, _non_negative
    ),
}
"""The general keys; the loss keys follow them (:func:`loss_keys`), :func:`all_keys` gives both."""


def loss_keys() -> dict[str, Key]:
    """``loss_weights`` and every parameter the registered loss terms declare (with their defaults and checks)."""
    keys = {
        "loss_weights": Key(
            "mapping term -> float >= 0",
            DEFAULT_LOSS_WEIGHTS,
            f"weights of {', '.join(TERMS)} (unlisted = 0)",
            check_weights,
        ),
        "loss_schedule": Key(
            "mapping term -> {start: int >= 0, ramp: int >= 1}",
            {},
            "per-term weight schedule: 0 before start, then loss_weights[term] * min(1, (epoch - start + 1) / "
            "ramp); logged as loss_weight_<term>; validation always uses the full weights",
            parse_loss_schedule,
        ),
    }
    for key, (param, _) in term_params().items():
        keys[key] = Key(param.type_name, param.default, param.meaning, param.parse, param.check)
    return keys


def all_keys() -> dict[str, Key]:
    """Every configuration key, in the order of the printed and saved configuration."""
    return {**KEYS, **loss_keys()}


def _loss_param_terms() -> dict[str, tuple[str, ...]]:
    return {key: terms for key, (_, terms) in term_params().items()}


def _valid_keys_text() -> str:
    return "Valid keys: " + ", ".join(all_keys())


def _fail(source: str, message: str) -> TopoConfigError:
    return TopoConfigError(f"{source}: {message}. {_valid_keys_text()}.")


def _validated(name: Any, value: Any, source: str) -> Any:
    """The parsed value of one key (raises :class:`TopoConfigError` naming ``source``, the key and the value)."""
    keys = all_keys()
    if name not in keys:
        close = difflib.get_close_matches(str(name), list(keys) + list(DIRECTIVE_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _fail(source, f"unknown key {name!r}{hint}")
    if value is None and name in NULLABLE_KEYS:
        return None
    if value is None and name in _loss_param_terms():
        value = keys[name].default
    try:
        return keys[name].validate(value)
    except ValueError as exc:
        raise _fail(source, f"key {name!r} = {value!r} is invalid: {exc} (expected {keys[name].type_name})") from None


def resolve_config(
    overrides: Mapping[str, Any] | None = None,
    variant_defaults: Mapping[str, Any] | None = None,
    source: str = "config",
    variant_name: str = "trainer variant",
    fixed_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Merge the defaults of :data:`KEYS`, then ``variant_defaults``, then ``overrides`` (the YAML); validate.

    ``fixed_keys``: keys the variant's name promises (``num_epochs`` of ``_250epochs``); ``overrides`` may repeat
    their value but not change it. Returns the effective configuration. Raises :class:`TopoConfigError` naming the
    source, the key and the value.
    """
    effective: dict[str, Any] = {name: key.default for name, key in all_keys().items()}
    for layer_source, layer in ((variant_name, variant_defaults or {}), (source, overrides or {})):
        if not isinstance(layer, Mapping):
            raise _fail(layer_source, f"the top level must be a mapping of key: value, got {type(layer).__name__}")
        for name, value in layer.items():
            effective[name] = _validated(name, value, layer_source)
    for name in fixed_keys:
        promised = _validated(name, (variant_defaults or {})[name], variant_name)
        if name in (overrides or {}) and effective[name] != promised:
            trainer = variant_name.split(".")[0]
            raise _fail(
                source,
                f"key {name!r} = {effective[name]!r} contradicts the trainer: {trainer} has {name} = {promised} in "
                f"its name. Remove {name} from the file, or train nnUNetTrainerTopoWarmup with {name}: "
                f"{effective[name]} (its output folder then does not claim {promised})",
            )
    effective["loss_weights"] = dict(effective["loss_weights"])
    fill_null_lrs(effective)
    return effective


def check_consistency(config: Mapping[str, Any], source: str) -> list[str]:
    """Relations between keys of an effective configuration of the TopoWarmup trainer.

    Raises :class:`TopoConfigError` for settings that cannot do what they say; returns warnings (to log) for
    settings that have no effect.
    """
    if config["plateau_min_lr"] >= config["initial_lr"]:
        raise _fail(
            source,
            f"plateau_min_lr = {config['plateau_min_lr']} is not below initial_lr = {config['initial_lr']}, so the "
            "plateau scheduler can never lower the LR. Set plateau_min_lr < initial_lr",
        )
    if config["warmup_epochs"] > config["num_epochs"]:
        raise _fail(
            source,
            f"warmup_epochs = {config['warmup_epochs']} > num_epochs = {config['num_epochs']}: the LR would never "
            f"reach initial_lr = {config['initial_lr']}. Set warmup_epochs < num_epochs (0 = no warmup)",
        )
    if config["plateau_metric"] == "val_score" and config["score_every_epochs"] == 0:
        raise _fail(
            source,
            "plateau_metric = 'val_score' needs scoring rounds, but score_every_epochs = 0 (off). Set "
            "score_every_epochs >= 1 (e.g. 5), or choose another plateau_metric",
        )
    unweighted = [t for t in config.get("loss_schedule") or {} if config["loss_weights"].get(t, 0) <= 0]
    if unweighted:
        raise _fail(
            source,
            f"loss_schedule schedules {unweighted} but loss_weights gives them no weight (loss_weights = "
            f"{json.dumps(config['loss_weights'])}). Add them to loss_weights or remove them from loss_schedule",
        )
    warnings = []
    if config["optimizer"] != "muon":
        for key in ("muon_other", "muon_other_lr", "muon_weight_decay"):
            if config.get(key, KEYS[key].default) != KEYS[key].default:
                warnings.append(f"{key} = {config[key]} has no effect: optimizer = {config['optimizer']!r} (not muon)")
    if config["score_every_epochs"] > config["num_epochs"]:
        warnings.append(
            f"score_every_epochs = {config['score_every_epochs']} > num_epochs = {config['num_epochs']}: no "
            "scoring round runs"
        )
    if config["warmup_epochs"] == config["num_epochs"]:
        warnings.append(
            f"warmup_epochs = num_epochs = {config['num_epochs']}: training ends with the warmup, the plateau "
            "scheduler never acts"
        )
    defaults = loss_keys()
    for param, terms in _loss_param_terms().items():
        value = config.get(param)
        if to_jsonable(value) != to_jsonable(defaults[param].default) and not any(
            config["loss_weights"].get(term, 0) > 0 for term in terms
        ):
            users = " and the ".join(repr(t) for t in terms)
            warnings.append(
                f"{param} = {json.dumps(to_jsonable(value))} has no effect: the {users} term has weight 0 "
                f"(loss_weights = {json.dumps(config['loss_weights'])})"
            )
    return warnings


def logged_config(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A configuration :func:`format_config` printed into a training log, read back and validated (keys unknown to
    this version are dropped, keys it did not print take their defaults)."""
    return resolve_config({k: v for k, v in values.items() if k in all_keys()}, source=source)
