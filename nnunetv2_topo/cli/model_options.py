"""What ``predict`` makes of its model options, for folders of cases (:mod:`.predict`) and Zarr volumes
(:mod:`.predict_scroll`) alike: the device, the ``--config`` file, and the models with their fusion weights and
checkpoints (by the one fusion rule of :mod:`nnunetv2_topo.inference.fusion_settings`)."""

from __future__ import annotations

import argparse
import sys

from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.inference.fusion_settings import FusionFlags, kept_inputs, resolve_fusion
from nnunetv2_topo.inference.models import check_model_folders
from nnunetv2_topo.postprocessing.config_file import load_postprocess_file, unfinished_search_warning
from nnunetv2_topo.postprocessing.probabilities import FINAL_CHECKPOINT

__all__ = ["device", "load_config", "resolve_models"]


def device(name: str | None):
    """``torch.device`` of ``--device`` (default: cuda when available, else cpu); CLIError for cuda without one."""
    import torch

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return torch.device(name)


def load_config(args: argparse.Namespace):
    """The --config file (None without one); an unfinished tune's file is used with a warning."""
    if args.config is None:
        return None

    try:
        config = load_postprocess_file(args.config)
    except ValueError as exc:  # a plain ValueError naming the file and key
        raise CLIError(str(exc)) from exc
    warning = unfinished_search_warning(config, args.config)
    if warning:
        print(warning, file=sys.stderr)
    return config


def resolve_models(args: argparse.Namespace, config):
    """``(checked model folders, fusion mode, weights)`` of the models that take part: the fusion of --fusion,
    --weights, --checkpoint and the --config file's (one rule for every command); a model of weight 0 (left out by
    tune) is neither checked nor loaded."""
    flags = FusionFlags(mode=args.fusion, weights=args.weights, checkpoint=args.checkpoint)
    base, source = (None, None) if config is None else (config.fusion, str(args.config))
    fusion, notes = resolve_fusion([str(m) for m in args.model], "--model", flags, base, source)
    for note in notes:
        print(note, file=sys.stderr)
    weights = fusion.weights or (1.0,) * len(args.model)
    checkpoints = fusion.checkpoints or (None,) * len(args.model)
    used = kept_inputs(fusion)
    for i, model in enumerate(args.model):
        if i not in used:
            print(f"{model}: fusion weight 0 (left out of the ensemble): not loaded", file=sys.stderr)
    folders = check_model_folders(
        [args.model[i] for i in used], args.folds, [checkpoints[i] or FINAL_CHECKPOINT for i in used]
    )
    return folders, fusion.mode, tuple(weights[i] for i in used)
