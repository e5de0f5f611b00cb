"""Reduced nnU-Net plans for CPU tests, demos and benchmarks, for nnU-Net's default (PlainConvUNet) and residual
encoder (ResEnc) presets.

:func:`make_reduced_plans` derives a small plans file from a planner's output (fewer stages and features, a
smaller patch and batch) that reuses the same preprocessed data, so it is passed to the real commands with ``-p``::

    make_reduced_plans(Path(os.environ["nnUNet_preprocessed"]) / "Dataset001_Vesuvius")
    nnUNetv2_train 1 3d_fullres 0 -p nnUNetPlans_tiny -tr nnUNetTrainerTopoWarmup -device cpu

    nnUNetv2_plan_experiment -d 1 -pl nnUNetPlannerResEncM          # -> nnUNetResEncUNetMPlans.json
    make_reduced_plans(folder, source="nnUNetResEncUNetMPlans")       # -> nnUNetResEncUNetMPlans_tiny.json
    nnUNetv2_train 1 3d_fullres 0 -p nnUNetResEncUNetMPlans_tiny -tr nnUNetTrainerTopoWarmup -device cpu

nnU-Net's ResEnc planners give ``3d_fullres`` the data identifier ``nnUNetPlans_3d_fullres``: they reuse the
default plans' preprocessed data, so planning alone (``nnUNetv2_plan_experiment``) is enough once
``nnUNetv2_plan_and_preprocess`` has run.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_topo import LABELS
from nnunetv2_topo.io import atomic_write_text

__all__ = ["NETWORKS", "RESENC_PLANS", "make_reduced_plans", "standalone_plans", "vesuvius_dataset_json"]

NETWORKS = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}
"""Network classes :func:`standalone_plans` can describe (nnU-Net's default and its residual-encoder preset)."""

RESENC_PLANS = {
    "nnUNetPlannerResEncM": "nnUNetResEncUNetMPlans",
    "nnUNetPlannerResEncL": "nnUNetResEncUNetLPlans",
    "nnUNetPlannerResEncXL": "nnUNetResEncUNetXLPlans",
}
"""nnU-Net's ResEnc planners (``-pl``) and the plans identifier (``-p``) each writes."""

RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
"""Residual blocks per encoder stage of nnU-Net's ResEnc planners (``UNet_blocks_per_stage_encoder``)."""


def _fail(plans_file: Path, message: str) -> ValueError:
    return ValueError(f"{plans_file}: {message}")


def make_reduced_plans(
    preprocessed_dataset_dir: str | os.PathLike,
    name: str | None = None,
    features: Sequence[int] = (4, 8, 16),
    patch: Sequence[int] = (32, 32, 32),
    batch: int = 2,
    stages: int | None = None,
    source: str = "nnUNetPlans",
    configuration: str = "3d_fullres",
) -> Path:
    """Write ``<preprocessed_dataset_dir>/<name>.json``: ``source`` plans with ``configuration`` reduced; ``name``
    defaults to ``<source>_tiny`` (``nnUNetPlans_tiny``, ``nnUNetResEncUNetMPlans_tiny``).

    The reduced configuration keeps the ``data_identifier`` (same preprocessed data), the first ``stages`` encoder
    stages (default ``len(features)``) with ``features`` channels, ``patch`` voxels and batch size ``batch``; all
    other configurations are dropped so the file cannot be used by mistake for a full-size one. Works for any
    network whose ``arch_kwargs`` are per-stage lists (PlainConvUNet's ``n_conv_per_stage``, ResEnc's
    ``n_blocks_per_stage``; the network class is kept). Returns the path
    (written atomically). Raises ``ValueError`` naming the plans file for impossible settings and
    ``FileNotFoundError`` when the source plans are missing.
    """
    folder = Path(preprocessed_dataset_dir)
    name = f"{source}_tiny" if name is None else name
    source_file, plans, cfg = _source_configuration(folder, source, name, configuration)
    n_stages = len(features) if stages is None else int(stages)
    features = [int(f) for f in features]
    patch = [int(p) for p in patch]
    _check_reduction(source_file, cfg, n_stages, features, patch, batch)
    _reduce(cfg, n_stages, features, patch, batch)
    plans["plans_name"] = name
    plans["configurations"] = {configuration: cfg}
    out = folder / f"{name}.json"
    atomic_write_text(out, json.dumps(plans, indent=2))
    return out


def _source_configuration(folder: Path, source: str, name: str, configuration: str) -> tuple[Path, dict, dict]:
    """The source plans file, its plans and a copy of its concrete ``configuration`` (errors name the file)."""
    source_file = folder / f"{source}.json"
    if not source_file.is_file():
        raise FileNotFoundError(
            f"{source_file} not found: run nnUNetv2_plan_and_preprocess for this dataset first (for the ResEnc "
            f"presets also nnUNetv2_plan_experiment -pl {' or '.join(RESENC_PLANS)}), or pass source= with a plans "
            f"identifier that exists in {folder}"
        )
    if name == source:
        raise ValueError(f"name must differ from source ({source!r}); the source plans would be overwritten")
    plans = json.loads(source_file.read_text())
    configs = plans.get("configurations", {})
    if configuration not in configs:
        raise _fail(source_file, f"no configuration {configuration!r}; available: {', '.join(configs)}")
    cfg = copy.deepcopy(configs[configuration])
    if "data_identifier" not in cfg:
        raise _fail(source_file, f"configuration {configuration!r} inherits from another one; pick a concrete one")
    return source_file, plans, cfg


def _check_reduction(source_file: Path, cfg: dict, n_stages: int, features: list, patch: list, batch: int) -> None:
    arch = cfg["architecture"]["arch_kwargs"]
    if n_stages < 2 or n_stages > int(arch["n_stages"]):
        raise _fail(source_file, f"stages must lie in [2, {arch['n_stages']}] (the source network), got {n_stages}")
    if len(features) != n_stages or any(f < 1 for f in features):
        raise ValueError(f"features needs {n_stages} positive channel counts (one per stage), got {features}")
    if len(patch) != len(cfg["patch_size"]):
        raise ValueError(f"patch needs {len(cfg['patch_size'])} sizes, got {patch}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    strides = [list(s) for s in arch["strides"][:n_stages]]
    for axis, size in enumerate(patch):
        divisor = 1
        for s in strides:
            divisor *= int(s[axis])
        if size < 1 or size % divisor:
            raise ValueError(
                f"patch {patch}: size {size} on axis {axis} must be a positive multiple of {divisor} "
                f"(the product of the first {n_stages} strides {strides})"
            )


def _reduce(cfg: dict, n_stages: int, features: list, patch: list, batch: int) -> None:
    """Cut ``cfg``'s network to its first ``n_stages`` stages with ``features``, ``patch`` and ``batch`` (in place)."""
    arch = cfg["architecture"]["arch_kwargs"]
    arch["n_stages"] = n_stages
    arch["features_per_stage"] = features
    for key in ("kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage"):
        if key in arch:
            arch[key] = arch[key][:n_stages]
    if "n_conv_per_stage_decoder" in arch:
        arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: n_stages - 1]
    cfg["patch_size"] = patch
    cfg["batch_size"] = int(batch)


def standalone_plans(
    patch: Sequence[int],
    features: Sequence[int] = (4, 8, 16),
    batch: int = 2,
    dataset_name: str = "Dataset999_Standalone",
    plans_name: str = "nnUNetPlans_standalone",
    data_identifier: str = "nnUNetPlans_3d_fullres",
    median_shape: Sequence[int] | None = None,
    network: str = "PlainConvUNet",
) -> dict:
    """A complete in-memory nnU-Net plans dict (one ``3d_fullres`` configuration: a ``network`` with one stage
    per entry of ``features``, stride 2 after the first, CT normalisation, spacing 1) for building trainers
    without running the planner: unit tests and step-time benchmarks. ``patch`` must be divisible by
    ``2 ** (len(features) - 1)``. ``network``: a key of :data:`NETWORKS`; ``"ResidualEncoderUNet"`` has the
    ResEnc planners' blocks per stage (1, 3, 4, 6, ...) and one convolution per decoder stage."""
    features = [int(f) for f in features]
    patch = [int(p) for p in patch]
    _check_standalone(network, features, patch)
    shape = [int(s) for s in (median_shape or patch)]
    configuration = _standalone_configuration(network, features, patch, int(batch), shape, data_identifier)
    intensity = {"max": 255.0, "mean": 100.0, "median": 100.0, "min": 0.0, "percentile_00_5": 1.0,
                 "percentile_99_5": 250.0, "std": 40.0}  # fmt: skip
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": shape,
        "image_reader_writer": "Tiff3DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensity},
    }


def _check_standalone(network: str, features: list[int], patch: list[int]) -> None:
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    n = len(features)
    if n < 2 or any(f < 1 for f in features):
        raise ValueError(f"features needs at least 2 positive channel counts, got {features}")
    if any(p < 1 or p % 2 ** (n - 1) for p in patch):
        raise ValueError(f"patch {patch} must be a positive multiple of {2 ** (n - 1)} on every axis for {n} stages")
    if network == "ResidualEncoderUNet" and n > len(RESENC_BLOCKS):
        raise ValueError(f"features: at most {len(RESENC_BLOCKS)} stages for {network}, got {n}")


def _standalone_configuration(
    network: str, features: list[int], patch: list[int], batch: int, shape: list[int], data_identifier: str
) -> dict:
    """The ``3d_fullres`` configuration of :func:`standalone_plans`."""
    n = len(features)
    if network == "ResidualEncoderUNet":
        blocks = {"n_blocks_per_stage": list(RESENC_BLOCKS[:n]), "n_conv_per_stage_decoder": [1] * (n - 1)}
    else:
        blocks = {"n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}
    return {
        "data_identifier": data_identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch,
        "patch_size": patch,
        "median_image_size_in_voxels": [float(s) for s in shape],
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": NETWORKS[network],
            "arch_kwargs": {
                "n_stages": n,
                "features_per_stage": features,
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[3, 3, 3]] * n,
                "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
                **blocks,
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }


def vesuvius_dataset_json(num_training: int) -> dict:
    """The ``dataset.json`` content of a converted Vesuvius dataset (as ``nnUNetv2_convert_vesuvius`` writes it),
    for trainers built in memory next to :func:`standalone_plans`."""
    return {
        "channel_names": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": int(num_training),
        "file_ending": ".tif",
        "overwrite_image_reader_writer": "Tiff3DIO",
    }
