"""``nnunetv2_topo predict``: trained models -> fused, post-processed predictions or a submission.zip."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "predict with one or more trained nnU-Net models, fused in memory, into <id>.tif files or a submission.zip"
DESCRIPTION = """\
Predict every volume of --input with each --model (nnU-Net's own preprocessing and sliding window, the folds'
logits averaged as nnUNetv2_predict does), fuse the models' binary logits l1 - l0 in memory (--fusion, --weights),
then threshold at 0.5 or run the post-processing of --config. Nothing but the final volumes is written.

  --input    Kaggle's test_images/ (<id>.tif) or nnU-Net's imagesTs/ (<id>_0000.tif)
  --output   a folder (one uint8 <id>.tif per case) or a .zip (a checked Kaggle submission)
  --model    a trained-model folder <trainer>__<plans>__<configuration> (repeat for several models)
  --tta      none | mirror (nnU-Net's 8 mirrorings, its default) | mirror+rot90 (16 views: also 90 degrees about z)

Several machines: run with --num-parts N --part-id K into one folder per part (cases split as nnU-Net's
-num_parts/-part_id do), then join them: nnunetv2_topo predict --merge PART_DIR ... --output submission.zip

Example (Kaggle notebook):
  nnunetv2_topo predict --input test_images --output submission.zip --csv test.csv \\
      --model results/Dataset100_Vesuvius/nnUNetTrainerTopoWarmup__nnUNetPlans__3d_fullres --folds 0 \\
      --config postprocess.json --tta mirror+rot90 --time-budget-hours 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunetv2_topo.cli.predict_scroll import add_volume_arguments, path_or_url
    from nnunetv2_topo.inference.predict import TTA_MODES
    from nnunetv2_topo.postprocessing.fusion import FUSION_MODES

    parser.add_argument("--input", type=path_or_url, help="folder of test volumes (<id>.tif or <id>_0000.tif), or a "
                        "Zarr/OME-Zarr volume (path or fsspec URL)")  # fmt: skip
    parser.add_argument("--output", type=path_or_url, required=True,
                        help="output folder, a .zip for a submission, or OUT.zarr for a volume")  # fmt: skip
    parser.add_argument("--model", type=Path, action="append", default=[], help="trained-model folder (repeatable)")
    parser.add_argument(
        "--folds", nargs="+", help="folds to use in every model (default: every fold with a checkpoint)"
    )
    parser.add_argument(
        "--checkpoint",
        help="checkpoint file of every model (default: per model the --config file's fusion.checkpoints, else "
        "checkpoint_final.pth)",
    )
    parser.add_argument("--weights", type=float, nargs="+", help="one fusion weight per --model (default: equal)")
    parser.add_argument("--fusion", choices=FUSION_MODES, help="fuse logits (default) or probabilities")
    parser.add_argument("--tta", choices=TTA_MODES, default="mirror", help="test-time augmentation (default mirror)")
    parser.add_argument("--config", type=Path, help="postprocess.json (from tune): fusion and post-processing steps")
    parser.add_argument("--csv", type=Path, help="test.csv: check that the input's cases are exactly its ids")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    parser.add_argument("--num-parts", type=int, default=1, help="split the cases into N parts (default 1)")
    parser.add_argument("--part-id", type=int, default=0, help="the part to predict, 0..N-1 (default 0)")
    parser.add_argument("--time-budget-hours", type=float, help="warn when the ETA exceeds it; past it, no TTA")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="PART_DIR", help="join part folders into --output")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output .zip, or write into a non-empty output folder (replacing <id>.tif files); "
        "an OUT.zarr made with other settings is replaced only after every check passed (never the work of "
        "another --num-parts part of the same settings)",
    )
    parser.add_argument(
        "--allow-intensity-mismatch",
        action="store_true",
        help="predict test images whose intensities lie outside the model's training range (warn instead of refuse)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--log-cases",
        action="store_true",
        help="print one line per finished case (id, seconds, TTA used or dropped to fit --time-budget-hours), "
        "for logs where a progress bar is unreadable (Kaggle's notebook log)",
    )
    add_volume_arguments(parser)


def _device(name: str | None):
    import torch

    from nnunetv2_topo.cli.main import CLIError

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return torch.device(name)


def _fusion(args: argparse.Namespace, n_models: int, config):
    """(mode, weights): --fusion/--weights when either is given, else the --config file's fusion, else logit/equal."""
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.postprocessing.fusion import check_fusion_weights

    if config is not None and args.weights is None and args.fusion is None:
        mode, weights, source = config.fusion.mode, config.fusion.weights, f"{args.config} (fusion.weights)"
    else:
        mode, weights, source = args.fusion or "logit", args.weights, "--weights"
    try:
        return mode, check_fusion_weights(weights, n_models)
    except ValueError as exc:
        raise CLIError(f"{source}: {exc} (one weight per --model, {n_models} model(s) given)") from exc


def _checkpoints(args: argparse.Namespace, n_models: int, config) -> list[str]:
    """Per model: --checkpoint, else the --config file's fusion.checkpoints (chosen by tune), else the final one."""
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.postprocessing.probabilities import FINAL_CHECKPOINT

    chosen = None if config is None else config.fusion.checkpoints
    if args.checkpoint is not None:
        if chosen is not None and any(c not in (None, args.checkpoint) for c in chosen):
            print(
                f"--checkpoint {args.checkpoint} overrides fusion.checkpoints = "
                f"{','.join(str(c) for c in chosen)} from {args.config}",
                file=sys.stderr,
            )
        return [args.checkpoint] * n_models
    if chosen is None:
        return [FINAL_CHECKPOINT] * n_models
    if len(chosen) != n_models:
        raise CLIError(
            f"{args.config} (fusion.checkpoints) names {len(chosen)} checkpoint(s) for {n_models} --model(s); give "
            "one --model per tuned input, in order, or choose one for all with --checkpoint"
        )
    return [c or FINAL_CHECKPOINT for c in chosen]


def resolve_models(args: argparse.Namespace, config):
    """``(checked model folders, fusion mode, weights)`` of the models that take part: a model of weight 0 (left
    out by tune) is neither checked nor loaded; each model with its checkpoint (:func:`_checkpoints`)."""
    from nnunetv2_topo.inference.models import check_model_folders

    mode, weights = _fusion(args, len(args.model), config)
    checkpoints = _checkpoints(args, len(args.model), config)
    for model, weight in zip(args.model, weights, strict=True):
        if weight == 0:
            print(f"{model}: fusion weight 0 (left out of the ensemble): not loaded", file=sys.stderr)
    used = [i for i, w in enumerate(weights) if w > 0]
    folders = check_model_folders([args.model[i] for i in used], args.folds, [checkpoints[i] for i in used])
    return folders, mode, tuple(weights[i] for i in used)


def load_config(args: argparse.Namespace):
    """The --config file (None without one); an unfinished tune's file is used with a warning."""
    from nnunetv2_topo.cli.main import CLIError

    if args.config is None:
        return None
    from nnunetv2_topo.postprocessing.config_file import load_postprocess_file, unfinished_search_warning

    try:
        config = load_postprocess_file(args.config)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    warning = unfinished_search_warning(config, args.config)
    if warning:
        print(warning, file=sys.stderr)
    return config


def _check_output(args: argparse.Namespace) -> bool:
    """True for a zip output; refuses an existing zip without --overwrite and a zip for one part of several."""
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.output_checks import check_output_file, check_output_folder

    is_zip = args.output.suffix.lower() == ".zip"
    if is_zip and args.num_parts > 1:
        raise CLIError("--num-parts > 1 writes one folder per part; pass a folder as --output and join the parts "
                       "with --merge PART_DIR ... --output submission.zip")  # fmt: skip
    if is_zip:
        check_output_file(args.output, args.overwrite, "--output", "submission.zip")
    else:
        check_output_folder(args.output, args.overwrite, "--output", create=False)
    return is_zip


def _check_intensities(args: argparse.Namespace, folders, part) -> None:
    """Test images outside the models' training intensities (dataset fingerprint): refused, or with
    --allow-intensity-mismatch a warning per case."""
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.input_checks import test_image_problems, training_intensities

    problems = test_image_problems([(c.id, c.image) for c in part], [training_intensities(f.path) for f in folders])
    if not problems:
        return
    if not args.allow_intensity_mismatch:
        more = f" (and {len(problems) - 3} more case(s))" if len(problems) > 3 else ""
        raise CLIError(
            "; ".join(problems[:3]) + more + ". Predictions on such images are unreliable: rescale the images, or "
            "add --allow-intensity-mismatch to predict them anyway"
        )
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)


def _merge(args: argparse.Namespace) -> int:
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.inference.cases import CaseError, iter_part_volumes, merged_part_files
    from nnunetv2_topo.submission import SubmissionError, check_ids, read_test_ids, write_volumes_zip

    extra = [f"--{k.replace('_', '-')}" for k in ("input", "config", "folds", "weights", "fusion") if getattr(args, k)]
    if args.model or extra:
        raise CLIError(f"--merge only joins finished parts; drop {', '.join(extra + ['--model'] * bool(args.model))}")
    if args.output.suffix.lower() != ".zip":
        raise CLIError(f"--merge writes a submission: --output must end in .zip, got {args.output}")
    from nnunetv2_topo.output_checks import check_output_file

    check_output_file(args.output, args.overwrite, "--output", "submission.zip")
    try:
        files = merged_part_files(args.merge)
        ids = list(files)
        if args.csv is not None:
            check_ids(read_test_ids(args.csv), ids, args.csv, kind="input volume")
        out = write_volumes_zip(args.output, ids, iter_part_volumes(files))
    except (CaseError, SubmissionError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {out} ({len(ids)} case(s) from {len(args.merge)} part(s))")
    return 0


def run(args: argparse.Namespace) -> int:
    from nnunetv2_topo.cli.main import CLIError

    if args.merge:
        return _merge(args)
    from nnunetv2_topo.cli.predict_scroll import is_volume_run, run_volume

    if is_volume_run(args):
        return run_volume(args)
    if args.input is None or not args.model:
        raise CLIError("--input and at least one --model are required (or --merge PART_DIR ... to join parts)")
    if args.time_budget_hours is not None and not args.time_budget_hours > 0:
        raise CLIError(f"--time-budget-hours must be > 0, got {args.time_budget_hours}")

    from nnunetv2_topo.inference.cases import CaseError, check_part, index_input_images, split_part
    from nnunetv2_topo.inference.models import ModelError
    from nnunetv2_topo.submission import SubmissionError, check_ids, read_test_ids

    # every check before any work
    try:
        check_part(args.num_parts, args.part_id)
        is_zip = _check_output(args)
        cases = index_input_images(args.input)
        if args.csv is not None:
            check_ids(read_test_ids(args.csv), [c.id for c in cases], args.csv, kind="input volume")
        config = load_config(args)
        folders, mode, weights = resolve_models(args, config)
    except (CaseError, ModelError, SubmissionError) as exc:
        raise CLIError(str(exc)) from exc
    device = _device(args.device)
    part = split_part(cases, args.num_parts, args.part_id)
    _check_intensities(args, folders, part)
    return _predict(args, folders, weights, mode, config, device, cases, part, is_zip)


def _predict(args, folders, weights, mode, config, device, cases, part, is_zip) -> int:
    from nnunetv2_topo.cli.main import CLIError
    from nnunetv2_topo.inference.cases import CaseError, write_part_manifest
    from nnunetv2_topo.inference.models import ModelError, use_topo_trainers
    from nnunetv2_topo.inference.predict import RunReport, load_models, predict_cases
    from nnunetv2_topo.io import write_tiff
    from nnunetv2_topo.submission import SubmissionError, write_volumes_zip

    use_topo_trainers()
    try:
        models = load_models(folders, weights, device, progress=not args.quiet)
    except ModelError as exc:
        raise CLIError(str(exc)) from exc
    if not args.quiet:
        print(f"{len(part)} case(s), {len(models)} model(s), fusion {mode}, TTA {args.tta}, device {device}, "
              f"{'post-processing ' + str(args.config) if config else 'threshold 0.5'}", file=sys.stderr)  # fmt: skip
    report = RunReport()
    volumes = predict_cases(
        models, part, args.tta, mode, None if config is None else config.steps, report,
        budget_hours=args.time_budget_hours, progress=not args.quiet,
        log_case=(lambda line: print(line, file=sys.stderr, flush=True)) if args.log_cases else None,
    )  # fmt: skip
    try:
        if is_zip:
            write_volumes_zip(args.output, [c.id for c in part], volumes)
        else:
            args.output.mkdir(parents=True, exist_ok=True)
            if args.num_parts > 1:
                write_part_manifest(args.output, [c.id for c in cases], args.num_parts, args.part_id)
            for cid, mask in volumes:
                write_tiff(args.output / f"{cid}.tif", mask)
    except (CaseError, SubmissionError) as exc:
        raise CLIError(str(exc)) from exc
    print(report.summary(args.tta, args.time_budget_hours))
    print(f"wrote {args.output}")
    if not is_zip:
        from nnunetv2_topo.cli.postprocess import warn_stale
        from nnunetv2_topo.inference.cases import PART_MANIFEST

        warn_stale(args.output, [f"{c.id}.tif" for c in part] + [PART_MANIFEST])
    return 0
