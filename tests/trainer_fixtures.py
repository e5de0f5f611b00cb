"""Helpers for the trainer tests: an in-process TopoWarmup trainer on tiny plans, synthetic batches."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

PATCH = (16, 16, 16)

TINY_CONFIGURATION = {
    "data_identifier": "nnUNetPlans_3d_fullres",
    "preprocessor_name": "DefaultPreprocessor",
    "batch_size": 2,
    "patch_size": list(PATCH),
    "median_image_size_in_voxels": [32.0, 40.0, 36.0],
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
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
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

TINY_PLANS = {
    "dataset_name": "Dataset999_TrainerUnit",
    "plans_name": "nnUNetPlans_tiny",
    "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
    "original_median_shape_after_transp": [32, 40, 36],
    "image_reader_writer": "Tiff3DIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {"3d_fullres": TINY_CONFIGURATION},
    "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        "0": {"max": 255.0, "mean": 109.0, "median": 100.0, "min": 0.0, "percentile_00_5": 26.0,
              "percentile_99_5": 234.0, "std": 44.8}
    },
}  # fmt: skip

DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "surface": 1, "ignore": 2},
    "numTraining": 4,
    "file_ending": ".tif",
    "overwrite_image_reader_writer": "Tiff3DIO",
}


def make_trainer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trainer_cls: type,
    config: dict | None = None,
    fold: int = 0,
):
    """An initialized trainer on the CPU with the tiny plans; ``config`` is written to a YAML file and passed with
    ``nnUNet_topo_config``. Results go to ``tmp_path/results``."""
    results = tmp_path / "results"
    preprocessed = tmp_path / "preprocessed"
    data_folder = preprocessed / TINY_PLANS["dataset_name"] / TINY_CONFIGURATION["data_identifier"]
    data_folder.mkdir(parents=True, exist_ok=True)
    (data_folder / "case.b2nd").touch()  # lets nnU-Net infer its dataset class in initialize()
    results.mkdir(exist_ok=True)
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_compile", "false")
    if config is None:
        monkeypatch.delenv("nnUNet_topo_config", raising=False)
    else:
        cfg_file = tmp_path / f"config_{len(list(tmp_path.glob('config_*.yaml')))}.yaml"
        cfg_file.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("nnUNet_topo_config", str(cfg_file))
    plans = copy.deepcopy(TINY_PLANS)
    plans["continue_training"] = False
    trainer = trainer_cls(plans, "3d_fullres", fold, copy.deepcopy(DATASET_JSON), torch.device("cpu"))
    trainer.initialize()
    return trainer


def synthetic_batch(seed: int = 0, batch: int = 2, data_scale: float = 1.0) -> dict:
    """A batch like nnU-Net's data loader returns for the tiny plans: ``data`` (B, 1, 16, 16, 16) and the
    deep-supervision ``target`` list [(B, 1, 16³), (B, 1, 8³)] with labels 0/1/2 (a sheet plus an ignore slab)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros((batch, 1, *PATCH), dtype=torch.int16)
    for b in range(batch):
        z = 4 + int(torch.randint(0, 8, (1,), generator=g))
        labels[b, 0, z : z + 2] = 1
        labels[b, 0, :, :, -2:] = 2
    data = (labels == 1).float() * 2.0 + 0.5 * torch.randn(labels.shape, generator=g)
    data = data * data_scale
    low = labels[:, :, ::2, ::2, ::2].clone()
    return {"data": data, "target": [labels, low], "keys": [f"case{i}" for i in range(batch)]}


def parameters_snapshot(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.network.parameters()]


def total_norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors if t is not None)))


def constant_array(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)
