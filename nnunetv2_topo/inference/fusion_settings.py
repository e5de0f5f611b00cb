"""The one rule by which the fusion flags of a command (``--fusion``, ``--weights``, ``predict --checkpoint``) combine
with the fusion of a post-processing file (``postprocess.json`` from ``tune``); ``predict``, ``postprocess``,
``submit`` and ``tune`` all resolve their fusion here.

* mode: ``--fusion``, else the file's ``fusion.mode``, else logit;
* weights: ``--weights``, else the file's ``fusion.weights``, else equal; one per input, in order;
* checkpoints: ``--checkpoint`` (one for every input), else the file's ``fusion.checkpoints``, else none chosen;
* a file tuned on k inputs applies to exactly k inputs (the input flag given k times, in that order);
* a flag replaces only the value it names (``--weights`` alone keeps the file's mode), and says so when the file's
  value differs (a note).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.postprocessing.config_file import FusionSpec, check_checkpoint_names

__all__ = ["FusionFlags", "FusionSettingsError", "kept_inputs", "resolve_fusion", "without_unused"]


class FusionSettingsError(TopoError, ValueError):
    """The fusion flags or the file's fusion do not fit the inputs (a weight count, a bad weight, a file tuned on
    another number of inputs); the message names the flag or the file's key and the fix."""


@dataclass(frozen=True)
class FusionFlags:
    """What the command line said about the fusion (None = not given)."""

    mode: str | None = None
    weights: Sequence[float] | None = None
    checkpoint: str | None = None


def resolve_fusion(
    inputs: Sequence[str],
    flag: str,
    flags: FusionFlags,
    base: FusionSpec | None = None,
    source: str | None = None,
) -> tuple[FusionSpec, list[str]]:
    """``(FusionSpec over inputs, notes)``: ``flags`` over ``base`` (the fusion of the file ``source``; None
    without a file) by the rule of this module. ``flag`` names the inputs in messages (``--input``, ``--model``).
    The notes say which flag overrode which file value."""
    n = len(inputs)
    if base is not None and base.inputs and len(base.inputs) != n:
        raise FusionSettingsError(
            f"{source} was tuned on {len(base.inputs)} input(s) ({', '.join(base.inputs)}); give {flag} "
            f"{len(base.inputs)} time(s), in that order (got {n})"
        )
    base = FusionSpec() if base is None else base
    notes: list[str] = []

    def choose(key: str, given, file_value, shown_flag: str):
        if given is None:
            return file_value
        if source is not None and given != file_value:
            was = "equal" if file_value is None else _show(file_value)
            notes.append(f"{shown_flag} {_show(given)} overrides fusion.{key} = {was} from {source}")
        return given

    mode = choose("mode", flags.mode, base.mode, "--fusion")
    given_weights = None if flags.weights is None else tuple(float(w) for w in flags.weights)
    weights = choose("weights", given_weights, base.weights, "--weights")
    where = "--weights" if given_weights is not None else f"{source} (fusion.weights)"
    if weights is not None and len(weights) != n:
        raise FusionSettingsError(
            f"{where}: {len(weights)} weight(s) for {n} {flag}(s); give one weight per {flag}, in order"
        )
    checkpoints = base.checkpoints
    if flags.checkpoint is not None:
        try:
            check_checkpoint_names([flags.checkpoint], 1)
        except ValueError as exc:
            raise FusionSettingsError(f"--checkpoint {flags.checkpoint}: {exc}") from None
        if (
            checkpoints is not None
            and source is not None
            and any(c not in (None, flags.checkpoint) for c in checkpoints)
        ):
            notes.append(f"--checkpoint {flags.checkpoint} overrides fusion.checkpoints = {_show(checkpoints)} from "
                         f"{source}")  # fmt: skip
        checkpoints = (flags.checkpoint,) * n
    elif checkpoints is not None and len(checkpoints) != n:
        raise FusionSettingsError(
            f"{source} (fusion.checkpoints) names {len(checkpoints)} checkpoint(s) for {n} {flag}(s); give one {flag} "
            "per tuned input, in order"
        )
    try:
        fusion = FusionSpec(mode=mode, weights=weights, inputs=tuple(str(i) for i in inputs), checkpoints=checkpoints)
    except ValueError as exc:
        shown = f"--weights {_show(weights)}" if given_weights is not None else f"{source} (fusion)"
        raise FusionSettingsError(f"{shown}: {exc}") from None
    return fusion, notes


def kept_inputs(fusion: FusionSpec) -> list[int]:
    """Indices of the inputs that take part (weight > 0; all of them with equal weights)."""
    return [i for i, used in enumerate(fusion.used or (True,) * len(fusion.inputs)) if used]


def without_unused(fusion: FusionSpec) -> FusionSpec:
    """``fusion`` without its inputs of weight 0 (left out of the ensemble by ``tune``: neither read nor loaded)."""
    keep = kept_inputs(fusion)
    if len(keep) == len(fusion.inputs):
        return fusion
    return replace(
        fusion,
        weights=None if fusion.weights is None else tuple(fusion.weights[i] for i in keep),
        inputs=tuple(fusion.inputs[i] for i in keep),
        checkpoints=None if fusion.checkpoints is None else tuple(fusion.checkpoints[i] for i in keep),
    )


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)
