"""make_reduced_plans: a small plans file over the same preprocessed data, and its bad inputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from trainer_fixtures import TINY_CONFIGURATION, TINY_PLANS

from nnunetv2_topo.reduced_plans import make_reduced_plans


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    plans = copy.deepcopy(TINY_PLANS)
    cfg = copy.deepcopy(TINY_CONFIGURATION)
    arch = cfg["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=4,
        features_per_stage=[32, 64, 128, 256],
        kernel_sizes=[[3, 3, 3]] * 4,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2] * 4,
        n_conv_per_stage_decoder=[2] * 3,
    )
    cfg["patch_size"] = [32, 40, 40]
    plans["plans_name"] = "nnUNetPlans"
    plans["configurations"] = {"3d_fullres": cfg, "2d": {"inherits_from": "3d_fullres"}}
    folder = tmp_path / "Dataset999_X"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    return folder


def test_reduced_plans_are_loadable_and_small(dataset_dir: Path) -> None:
    out = make_reduced_plans(dataset_dir)
    assert out == dataset_dir / "nnUNetPlans_tiny.json"
    plans = json.loads(out.read_text())
    assert plans["plans_name"] == "nnUNetPlans_tiny"
    assert list(plans["configurations"]) == ["3d_fullres"]
    cm = PlansManager(plans).get_configuration("3d_fullres")
    assert cm.patch_size == [32, 32, 32] and cm.batch_size == 2
    assert cm.data_identifier == "nnUNetPlans_3d_fullres"  # same preprocessed data as the source plans
    kw = cm.network_arch_init_kwargs
    assert kw["n_stages"] == 3 and kw["features_per_stage"] == [4, 8, 16]
    assert len(kw["strides"]) == len(kw["kernel_sizes"]) == len(kw["n_conv_per_stage"]) == 3
    assert len(kw["n_conv_per_stage_decoder"]) == 2
    assert len(cm.pool_op_kernel_sizes) == 3
    # the source plans are untouched
    assert json.loads((dataset_dir / "nnUNetPlans.json").read_text())["plans_name"] == "nnUNetPlans"


def test_custom_sizes(dataset_dir: Path) -> None:
    out = make_reduced_plans(dataset_dir, name="p2", features=(2, 4), patch=(16, 24, 8), batch=1)
    cm = PlansManager(json.loads(out.read_text())).get_configuration("3d_fullres")
    assert cm.patch_size == [16, 24, 8] and cm.batch_size == 1
    assert cm.network_arch_init_kwargs["n_stages"] == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"patch": (30, 32, 32)}, ValueError, r"size 30 on axis 0 must be a positive multiple of 4"),
        ({"patch": (32, 32)}, ValueError, r"patch needs 3 sizes"),
        ({"features": (4, 8, 16, 32, 64)}, ValueError, r"stages must lie in \[2, 4\]"),
        ({"features": (4,)}, ValueError, r"stages must lie in \[2, 4\]"),
        ({"features": (4, 8, 16), "stages": 2}, ValueError, r"features needs 2 positive channel counts"),
        ({"features": (4, 0, 16)}, ValueError, r"features needs 3 positive"),
        ({"batch": 0}, ValueError, r"batch must be >= 1"),
        ({"configuration": "3d_lowres"}, ValueError, r"no configuration '3d_lowres'; available: 3d_fullres, 2d"),
        ({"configuration": "2d"}, ValueError, r"inherits from another one"),
        ({"name": "nnUNetPlans"}, ValueError, r"name must differ from source"),
        ({"source": "nnUNetResEncUNetMPlans"}, FileNotFoundError, r"run nnUNetv2_plan_and_preprocess"),
    ],
)
def test_bad_inputs(dataset_dir: Path, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make_reduced_plans(dataset_dir, **kwargs)
    assert not (dataset_dir / "nnUNetPlans_tiny.json").exists()


def test_standalone_plans_build_a_working_configuration_and_refuse_bad_sizes() -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_topo.reduced_plans import standalone_plans

    plans = standalone_plans((32, 16, 24), features=(4, 8, 16, 32), batch=3, median_shape=(40, 40, 40))
    cm = PlansManager(plans).get_configuration("3d_fullres")
    assert cm.patch_size == [32, 16, 24] and cm.batch_size == 3
    assert cm.network_arch_init_kwargs["features_per_stage"] == [4, 8, 16, 32]
    assert plans["original_median_shape_after_transp"] == [40, 40, 40]
    with pytest.raises(ValueError, match=r"multiple of 8 on every axis for 4 stages"):
        standalone_plans((32, 12, 24), features=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="at least 2 positive channel counts"):
        standalone_plans((16, 16, 16), features=(4,))


# ---- nnU-Net's residual-encoder (ResEnc) presets ---------------------------------------------------------------


@pytest.fixture
def resenc_dir(tmp_path: Path) -> Path:
    """A dataset folder with plans shaped like nnUNetPlannerResEncM's (6 stages, 32 -> 320 features)."""
    from nnunetv2_topo.reduced_plans import standalone_plans

    plans = standalone_plans(
        (64, 64, 64), features=(32, 64, 128, 256, 320, 320), network="ResidualEncoderUNet",
        plans_name="nnUNetResEncUNetMPlans", data_identifier="nnUNetPlans_3d_fullres",
    )  # fmt: skip
    folder = tmp_path / "Dataset999_X"
    folder.mkdir()
    (folder / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(plans))
    return folder


def test_reduced_resenc_plans_keep_the_network_and_its_blocks(resenc_dir: Path) -> None:
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    out = make_reduced_plans(resenc_dir, source="nnUNetResEncUNetMPlans")
    assert out == resenc_dir / "nnUNetResEncUNetMPlans_tiny.json"
    plans = json.loads(out.read_text())
    assert plans["plans_name"] == "nnUNetResEncUNetMPlans_tiny"
    cm = PlansManager(plans).get_configuration("3d_fullres")
    assert cm.network_arch_class_name.endswith(".ResidualEncoderUNet")
    assert cm.data_identifier == "nnUNetPlans_3d_fullres"  # ResEnc reuses the default plans' preprocessed data
    kw = cm.network_arch_init_kwargs
    assert kw["n_blocks_per_stage"] == [1, 3, 4] and kw["n_conv_per_stage_decoder"] == [1, 1]
    assert kw["features_per_stage"] == [4, 8, 16] and "n_conv_per_stage" not in kw
    net = get_network_from_plans(
        cm.network_arch_class_name, kw, cm.network_arch_init_kwargs_req_import, 1, 2, deep_supervision=True
    )
    outputs = net(torch.zeros(1, 1, 32, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(1, 2, 32, 32, 32), (1, 2, 16, 16, 16)]  # one per decoder stage


def test_missing_resenc_plans_name_the_planner(dataset_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM or"):
        make_reduced_plans(dataset_dir, source="nnUNetResEncUNetLPlans")


def test_standalone_plans_refuse_an_unknown_network() -> None:
    from nnunetv2_topo.reduced_plans import standalone_plans

    with pytest.raises(ValueError, match="network must be one of PlainConvUNet, ResidualEncoderUNet, got 'ResEnc'"):
        standalone_plans((16, 16, 16), network="ResEnc")


def test_topowarmup_steps_on_a_resenc_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One training step of the TopoWarmup trainer (default loss, EMA on) on a ResidualEncoderUNet."""
    import torch
    from trainer_fixtures import DATASET_JSON, PATCH, synthetic_batch

    from nnunetv2_topo.reduced_plans import standalone_plans
    from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup

    plans = standalone_plans(
        PATCH, features=(4, 8, 16), network="ResidualEncoderUNet", dataset_name="Dataset998_ResEnc",
        plans_name="nnUNetResEncUNetMPlans_tiny",
    )  # fmt: skip
    plans["continue_training"] = False  # what nnUNetv2_train sets
    data = tmp_path / "pre" / "Dataset998_ResEnc" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case.b2nd").touch()
    config = tmp_path / "topo.yaml"
    config.write_text("ema_decay: 0.9\n")
    for key, value in {"nnUNet_results": tmp_path / "res", "nnUNet_preprocessed": tmp_path / "pre"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("nnUNet_topo_config", str(config))
    trainer = nnUNetTrainerTopoWarmup(plans, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), torch.device("cpu"))
    trainer.initialize()
    assert type(trainer.network).__name__ == "ResidualEncoderUNet"
    trainer.on_train_epoch_start()
    before = [p.detach().clone() for p in trainer.network.parameters()]
    out = trainer.train_step(synthetic_batch())
    assert torch.isfinite(torch.as_tensor(out["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
    assert trainer.weight_ema is not None and trainer.weight_ema.num_updates == 1


def test_a_two_stage_network_gets_one_deep_supervision_weight() -> None:
    """2 stages = one decoder output: nnU-Net's rule (lowest scale 0, normalise) would give [nan]."""
    from nnunetv2_topo.trainers.loss_adapter import deep_supervision_weights

    assert deep_supervision_weights(1, False) == [1.0] and deep_supervision_weights(1, True) == [1.0]
