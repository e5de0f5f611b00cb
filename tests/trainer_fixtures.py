"""Helpers for the trainer tests: an in-process TopoWarmup trainer on tiny plans, synthetic batches."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json

PATCH = (16, 16, 16)

TINY_PLANS = standalone_plans(
    PATCH, features=(4, 8, 16), dataset_name="Dataset999_TrainerUnit", plans_name="nnUNetPlans_tiny",
    median_shape=(32, 40, 36),
)  # fmt: skip
TINY_CONFIGURATION = TINY_PLANS["configurations"]["3d_fullres"]

DATASET_JSON = vesuvius_dataset_json(4)


def make_trainer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trainer_cls: type,
    config: dict | Path | None = None,
    fold: int = 0,
    resume: bool = False,
    initialize: bool = True,
):
    """An initialized trainer on the CPU with the tiny plans; ``config`` is written to a YAML file and passed with
    ``nnUNet_topo_config`` (a ``Path`` is passed as it is, existing or not). Results go to ``tmp_path/results``.
    ``resume`` builds it as ``nnUNetv2_train --c`` does (``plans["continue_training"] = True``)."""
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
    elif isinstance(config, Path):
        monkeypatch.setenv("nnUNet_topo_config", str(config))
    else:
        cfg_file = tmp_path / f"config_{len(list(tmp_path.glob('config_*.yaml')))}.yaml"
        cfg_file.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("nnUNet_topo_config", str(cfg_file))
    plans = copy.deepcopy(TINY_PLANS)
    plans["continue_training"] = resume
    trainer = trainer_cls(plans, "3d_fullres", fold, copy.deepcopy(DATASET_JSON), torch.device("cpu"))
    if initialize:
        trainer.initialize()
    return trainer


def fold_dir(tmp_path: Path, trainer_name: str = "nnUNetTrainerTopoWarmup", fold: int = 0) -> Path:
    """The output folder of ``make_trainer(tmp_path, ...)``."""
    return (
        tmp_path
        / "results"
        / TINY_PLANS["dataset_name"]
        / f"{trainer_name}__nnUNetPlans_tiny__3d_fullres"
        / (f"fold_{fold}")
    )


def log_text(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted(folder.glob("training_log_*.txt")))


def with_synthetic_data(
    trainer_cls: type, val_batches: tuple[tuple[int, float], ...] = ((100, 0.5),), noise: float = 0.5
) -> type:
    """``trainer_cls`` whose data loaders yield :func:`synthetic_batch` (training: a new seed per batch with Gaussian
    ``noise`` on a signal of 2; validation: the fixed ``(seed, noise)`` batches in turn), so nnU-Net's own
    ``run_training`` loop runs without a preprocessed dataset. For loss weights without extra target channels
    (e.g. ce, dice)."""

    def get_dataloaders(self):
        import itertools

        train = (synthetic_batch(seed, noise=noise) for seed in itertools.count())
        val = (synthetic_batch(seed, noise=n) for seed, n in itertools.cycle(val_batches))
        return train, val

    return type(trainer_cls.__name__, (trainer_cls,), {"get_dataloaders": get_dataloaders, "__module__": __name__})


def prepare_loop(tmp_path: Path) -> None:
    """Files nnU-Net's ``on_train_start`` copies into the results folder."""
    base = tmp_path / "preprocessed" / TINY_PLANS["dataset_name"]
    base.mkdir(parents=True, exist_ok=True)
    (base / "dataset_fingerprint.json").write_text("{}")


def synthetic_batch(seed: int = 0, batch: int = 2, data_scale: float = 1.0, noise: float = 0.5) -> dict:
    """A batch like nnU-Net's data loader returns for the tiny plans: ``data`` (B, 1, 16, 16, 16) and the
    deep-supervision ``target`` list [(B, 1, 16³), (B, 1, 8³)] with labels 0/1/2 (a sheet plus an ignore slab)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros((batch, 1, *PATCH), dtype=torch.int16)
    for b in range(batch):
        z = 4 + int(torch.randint(0, 8, (1,), generator=g))
        labels[b, 0, z : z + 2] = 1
        labels[b, 0, :, :, -2:] = 2
    data = (labels == 1).float() * 2.0 + noise * torch.randn(labels.shape, generator=g)
    data = data * data_scale
    low = labels[:, :, ::2, ::2, ::2].clone()
    return {"data": data, "target": [labels, low], "keys": [f"case{i}" for i in range(batch)]}


def simulate_epoch(trainer, val_loss: float) -> None:
    """One epoch through the trainer's hooks with a scripted validation loss (no data, no plotting)."""
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([{"loss": np.array(1.0)}])
    trainer.on_validation_epoch_start()
    fake = {
        "loss": np.array(val_loss),
        "tp_hard": np.array([5.0]),
        "fp_hard": np.array([1.0]),
        "fn_hard": np.array([1.0]),
    }
    trainer.on_validation_epoch_end([fake])


def parameters_snapshot(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.network.parameters()]


def total_norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors if t is not None)))


def constant_array(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


SCORE_SHAPE = (20, 24, 20)


def write_score_dataset(tmp_path: Path, num_cases: int = 4, val_cases: int = 3, noise: float = 0.5) -> list[str]:
    """Real preprocessed cases of the tiny plans (nnU-Net's blosc2 files; images: a sheet of 2 plus Gaussian
    ``noise``), their ground truth in ``gt_segmentations`` (TIFF + spacing sidecar, read by Tiff3DIO) and a
    ``splits_final.json`` whose fold 0 has the last ``val_cases`` cases for validation: what a scoring round
    (``score_every_epochs``) predicts and scores.
    Call before :func:`make_trainer` with the same ``tmp_path``. Returns the validation keys."""
    import json

    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunetv2_topo.io import write_tiff

    base = tmp_path / "preprocessed" / TINY_PLANS["dataset_name"]
    data_folder = base / TINY_CONFIGURATION["data_identifier"]
    gt_dir = base / "gt_segmentations"
    data_folder.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    keys = [f"case{i:03d}" for i in range(num_cases)]
    for i, key in enumerate(keys):
        g = torch.Generator().manual_seed(1000 + i)
        labels = np.zeros(SCORE_SHAPE, dtype=np.uint8)
        z = 6 + 2 * i
        labels[z : z + 2] = 1  # a sheet like synthetic_batch's
        labels[:, :, -2:] = 2  # an unlabelled slab
        data = (labels == 1).astype(np.float32) * 2.0 + noise * torch.randn(SCORE_SHAPE, generator=g).numpy()
        properties = {
            "spacing": [1.0, 1.0, 1.0],
            "shape_before_cropping": SCORE_SHAPE,
            "bbox_used_for_cropping": [[0, s] for s in SCORE_SHAPE],
            "shape_after_cropping_and_before_resampling": SCORE_SHAPE,
            "class_locations": {1: np.argwhere(labels[None] == 1)[:10]},
        }
        nnUNetDatasetBlosc2.save_case(
            data[None].astype(np.float32), labels[None].astype(np.int8), properties, str(data_folder / key),
            chunks=(1, *SCORE_SHAPE), blocks=(1, *SCORE_SHAPE), chunks_seg=(1, *SCORE_SHAPE),
            blocks_seg=(1, *SCORE_SHAPE),
        )  # fmt: skip
        write_tiff(gt_dir / f"{key}.tif", labels)
        (gt_dir / f"{key}.json").write_text(json.dumps({"spacing": [1, 1, 1]}))
    val = keys[-val_cases:]
    splits = [{"train": keys[:-val_cases], "val": val}] * 5
    (base / "splits_final.json").write_text(json.dumps(splits))
    (data_folder / "case.b2nd").unlink(missing_ok=True)
    return val


def noisy_validation_trainer() -> type:
    """TopoWarmup on synthetic data whose validation draws one of three batches in turn, one of them far noisier: a
    validation signal that goes up and down like nnU-Net's from random patches."""
    from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

    return with_synthetic_data(nnUNetTrainerTopoWarmup, val_batches=((100, 0.5), (101, 0.5), (102, 6.0)))
