"""``nnunetv2_topo postprocess``: from probability maps (one or several models) to clean binary segmentations.

The option helpers here are shared: :func:`add_probability_arguments` and :func:`resolve_options` with ``submit``,
:func:`add_input_arguments` and :func:`resolve_fusion` (inputs, weights, fusion) with ``tune`` as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.inference.fusion_settings import FusionFlags, kept_inputs, without_unused
from nnunetv2_topo.inference.fusion_settings import resolve_fusion as resolve
from nnunetv2_topo.io import write_tiff
from nnunetv2_topo.output_checks import check_output_folder, stale_files
from nnunetv2_topo.postprocessing import (
    FUSION_MODES,
    PLUG_METHODS,
    PostprocessConfig,
    load_postprocess_file,
    postprocess_volume,
)
from nnunetv2_topo.postprocessing.config_file import unfinished_search_warning
from nnunetv2_topo.postprocessing.probabilities import (
    FINAL_CHECKPOINT,
    fuse_probability_files,
    model_checkpoints,
    paired_cases,
)

HELP = "fuse probability maps and clean them up: threshold/hysteresis, dust, holes, closing"
DESCRIPTION = """\
Read one case file per id from each --input (nnU-Net <case>.npz from nnUNetv2_predict --save_probabilities or
nnUNetv2_train --npz; float TIFF/NIfTI probability maps; or binary segmentations), fuse the inputs (one --input
per model; a model folder pools its fold_*/validation/*.npz), run the post-processing steps and write one LZW
TIFF <id>.tif per case, uint8 0/1. When a case has both <case>.npz and <case>.tif (nnU-Net writes both), the
.npz is used. Steps, in this fixed order (STEP_ORDER):
  threshold     p > --threshold; with --hysteresis-high H: components of p > threshold that reach p > H
  remove dust   26-connected components smaller than --min-size voxels
  plug holes    1-voxel holes: 2x2x2 watertight lookup table (lut), axis test (axis) or both
  patch holes   height-map patches for holes up to --patch-holes pixels
  closing       ellipsoid closing with radii --closing-radius Z,YX that never joins two components
  fill holes    fill enclosed cavities
--config postprocess.json, the post-processing file written by nnunetv2_topo tune, supplies the fusion and the
steps; a step flag given on the command line overrides the file's value (and says so).
"""


def _closing_radius(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z,YX or R (integers), got {text!r}") from None
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected Z,YX or R (integers), got {text!r}")
    return (values[0], values[1])


def _hysteresis_high(text: str) -> float | str:
    if text.lower() in ("off", "none"):
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


# CLI flag -> (PostprocessConfig field, argparse destination)
STEP_FLAGS = {
    "--threshold": ("threshold", "threshold"),
    "--hysteresis-high": ("hysteresis_high", "hysteresis_high"),
    "--min-size": ("min_component_size", "min_size"),
    "--plug-holes": ("plug_holes", "plug_holes"),
    "--plug-method": ("plug_method", "plug_method"),
    "--patch-holes": ("patch_holes", "patch_holes"),
    "--closing-radius": ("closing_radius", "closing_radius"),
    "--fill-holes": ("fill_holes", "fill_holes"),
}


def add_input_arguments(parser: argparse.ArgumentParser, input_required: bool = True) -> None:
    """--input (repeatable: one per model), --weights and --fusion: shared by postprocess, submit and tune."""
    parser.add_argument(
        "--input",
        action="append",
        type=Path,
        required=input_required,
        metavar="PATH",
        help="folder of <case>.npz / probability maps / segmentations, or an nnU-Net model folder "
        "(fold_*/validation/*.npz pooled); give once per model to fuse several",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="fusion weights, the i-th for the i-th --input"
    )
    parser.add_argument("--fusion", choices=FUSION_MODES, help="fuse binary logits (default) or probabilities")


def add_probability_arguments(parser: argparse.ArgumentParser, input_required: bool = True) -> None:
    """The input arguments (:func:`add_input_arguments`), --config and one flag per post-processing step."""
    d = PostprocessConfig()
    add_input_arguments(parser, input_required)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="POSTPROCESS_JSON",
        help="post-processing file (postprocess.json from nnunetv2_topo tune: fusion and steps); not the trainer "
        "configuration (topo_config) nor nnU-Net's -c",
    )
    g = parser.add_argument_group("post-processing steps (defaults: PostprocessConfig, or the --config file)")
    g.add_argument("--threshold", type=float, help=f"foreground where p > T (default {d.threshold})")
    g.add_argument(
        "--hysteresis-high",
        type=_hysteresis_high,
        metavar="H|off",
        help=f"keep only components reaching p > H (default {d.hysteresis_high or 'off'})",
    )
    g.add_argument(
        "--min-size", type=int, help=f"smallest kept component, voxels (default {d.min_component_size}; 0 = off)"
    )
    g.add_argument(
        "--plug-holes",
        action=argparse.BooleanOptionalAction,
        help=f"plug 1-voxel holes (default {'on' if d.plug_holes else 'off'})",
    )
    g.add_argument("--plug-method", choices=PLUG_METHODS, help=f"how to plug (default {d.plug_method})")
    g.add_argument(
        "--patch-holes", type=int, metavar="N", help=f"height-map patch holes up to N pixels (default {d.patch_holes})"
    )
    g.add_argument(
        "--closing-radius",
        type=_closing_radius,
        metavar="Z,YX",
        help="component-safe closing radii, or one R for both (default {},{}; 0,0 = off)".format(*d.closing_radius),
    )
    g.add_argument(
        "--fill-holes",
        action=argparse.BooleanOptionalAction,
        help=f"fill enclosed cavities (default {'on' if d.fill_holes else 'off'})",
    )


def resolve_fusion(args: argparse.Namespace, base=None, source: str | None = None):
    """``(inputs, FusionSpec, notes)`` from --input, --weights and --fusion over ``base`` (a file's fusion, read
    from ``source``), by the one fusion rule of :mod:`nnunetv2_topo.inference.fusion_settings`."""
    inputs = list(args.input or [])
    flags = FusionFlags(mode=args.fusion, weights=args.weights)
    fusion, notes = resolve([str(p) for p in inputs], "--input", flags, base, source)
    return inputs, fusion, notes


def used_inputs(inputs: list[Path], fusion):
    """``(inputs, fusion, notes)`` without the inputs of weight 0 (left out of the ensemble by tune: not read), and
    a note per input that is a folder of maps while the file chose a checkpoint other than the final one for it
    (a model folder gives that checkpoint's out-of-fold predictions itself)."""
    keep = kept_inputs(fusion)
    notes = [f"--input {path}: fusion weight 0 (left out of the ensemble): not read"
             for i, path in enumerate(inputs) if i not in keep]  # fmt: skip
    for i in keep:
        chosen = None if fusion.checkpoints is None else fusion.checkpoints[i]
        if chosen not in (None, FINAL_CHECKPOINT) and not (inputs[i].is_dir() and model_checkpoints(inputs[i])):
            notes.append(f"--input {inputs[i]}: tuned on the out-of-fold predictions of {chosen}: these maps must "
                         "come from that checkpoint too")  # fmt: skip
    return [inputs[i] for i in keep], without_unused(fusion), notes


def resolve_options(args: argparse.Namespace):
    """``(inputs, FusionSpec, PostprocessConfig, notes)`` from --config and the flags; CLIError on a conflict.

    ``notes`` are lines saying which command-line flags overrode which file values.
    """
    notes: list[str] = []
    if args.config is not None:
        try:
            pf = load_postprocess_file(args.config)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        warning = unfinished_search_warning(pf, args.config)
        if warning:
            notes.append(warning)
        base, steps, source = pf.fusion, pf.steps, str(args.config)
    else:
        base, steps, source = None, PostprocessConfig(), None
    changes: dict[str, Any] = {}
    for flag, (field, dest) in STEP_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        value = None if value == "off" else value
        if source is not None and value != getattr(steps, field):
            notes.append(
                f"{flag} {_show(value)} overrides steps.{field} = {_show(getattr(steps, field))} from {source}"
            )
        changes[field] = value
    inputs, fusion, fusion_notes = resolve_fusion(args, base, source)
    inputs, fusion, used_notes = used_inputs(inputs, fusion)
    try:
        steps = dataclasses.replace(steps, **changes)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return inputs, fusion, steps, notes + fusion_notes + used_notes


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "off" if value is None else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_probability_arguments(parser)
    parser.add_argument("--output", required=True, type=Path, help="folder for the cleaned <id>.tif volumes")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --output, replacing files of the same name"
    )


def run(args: argparse.Namespace) -> int:
    inputs, fusion, steps, notes = resolve_options(args)
    for note in notes:
        print(note)
    out_dir: Path = args.output
    if any(os.path.realpath(out_dir) == os.path.realpath(p) for p in inputs):
        raise CLIError("--output must differ from every --input (inputs would be overwritten)")
    cases = paired_cases(inputs, fusion.checkpoints)
    check_output_folder(out_dir, args.overwrite, "--output")
    for cid, paths in tqdm(cases.items(), desc="postprocess", unit="case"):
        probability = fuse_probability_files(paths, fusion.weights, fusion.mode)
        write_tiff(out_dir / f"{cid}.tif", postprocess_volume(probability, steps))
        del probability
    print(f"wrote {len(cases)} volume(s) to {out_dir} ({len(inputs)} input(s), {fusion.mode} fusion; {steps})")
    warn_stale(out_dir, [f"{cid}.tif" for cid in cases])
    return 0


def warn_stale(folder: Path, written: list[str]) -> None:
    """After an --overwrite: name the files of an earlier run that this run did not replace (kept as they are)."""
    stale = stale_files(folder, written)
    if stale:
        shown = ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else "")
        print(
            f"warning: {folder} also holds {len(stale)} file(s) this run did not write ({shown}); they were kept, "
            "remove them before scoring the folder",
            file=sys.stderr,
        )
