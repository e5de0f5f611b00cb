"""One fusion rule for predict, postprocess, submit and tune (:mod:`nnunetv2_topo.inference.fusion_settings`): how
--fusion/--weights/--checkpoint combine with a postprocess.json's fusion."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest

from nnunetv2_topo.inference.fusion_settings import (
    FusionFlags,
    FusionSettingsError,
    kept_inputs,
    resolve_fusion,
    without_unused,
)
from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file
from nnunetv2_topo.postprocessing.steps import PostprocessConfig

PROB_FILE = FusionSpec("prob", (0.25, 0.75), ("a", "b"), ("checkpoint_best.pth", None))


def _model_folder(root: Path) -> Path:
    """What ``check_model_folders`` reads (no weights are loaded): dataset.json, plans.json, fold_0/<ckpt>."""
    (root / "fold_0").mkdir(parents=True)
    labels = {"background": 0, "surface": 1, "ignore": 2}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels}))
    (root / "plans.json").write_text("{}")
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        (root / "fold_0" / name).write_bytes(b"")
    return root


@pytest.mark.parametrize(
    ("weights", "fusion", "mode", "expected_weights"),
    [
        (None, None, "prob", (0.25, 0.75)),
        ([1.0, 3.0], None, "prob", (1.0, 3.0)),
        (None, "logit", "logit", (0.25, 0.75)),
    ],
)
def test_predict_and_postprocess_combine_flags_and_file_alike(
    tmp_path, capsys, weights, fusion, mode, expected_weights
):
    """--weights alone keeps a prob file's mode (predict reset it to logit), --fusion alone keeps its weights: the
    same in predict (models) as in postprocess/submit (probability maps)."""
    from nnunetv2_topo.cli.postprocess import resolve_options
    from nnunetv2_topo.cli.predict import load_config, resolve_models

    config = tmp_path / "postprocess.json"
    save_postprocess_file(config, PostprocessFile(PROB_FILE, PostprocessConfig(), {}))
    models = [_model_folder(tmp_path / "m1"), _model_folder(tmp_path / "m2")]
    predict_args = Namespace(model=models, folds=None, checkpoint=None, weights=weights, fusion=fusion, config=config)
    folders, predict_mode, predict_weights = resolve_models(predict_args, load_config(predict_args))
    assert (predict_mode, predict_weights) == (mode, expected_weights)
    assert [f.checkpoint for f in folders] == ["checkpoint_best.pth", "checkpoint_final.pth"]

    pp_args = Namespace(input=models, weights=weights, fusion=fusion, config=config)
    pp_args.__dict__.update({dest: None for dest in ("threshold", "hysteresis_high", "min_size", "plug_holes")})
    pp_args.__dict__.update({dest: None for dest in ("plug_method", "patch_holes", "closing_radius", "fill_holes")})
    _, pp_fusion, _, notes = resolve_options(pp_args)
    assert (pp_fusion.mode, pp_fusion.weights) == (mode, expected_weights)
    if weights is not None:
        assert f"--weights 1.0,3.0 overrides fusion.weights = 0.25,0.75 from {config}" in notes


def test_rule_notes_and_errors() -> None:
    """Each flag replaces the value it names and says so; a wrong count or value names the flag or the file key."""
    fusion, notes = resolve_fusion(["x", "y"], "--model", FusionFlags(weights=[1, 1]), PROB_FILE, "pp.json")
    assert (fusion.mode, fusion.weights, fusion.checkpoints) == ("prob", (1.0, 1.0), ("checkpoint_best.pth", None))
    assert notes == ["--weights 1.0,1.0 overrides fusion.weights = 0.25,0.75 from pp.json"]
    fusion, notes = resolve_fusion(
        ["x", "y"], "--model", FusionFlags(checkpoint="checkpoint_final.pth"), PROB_FILE, "f"
    )
    assert (
        fusion.checkpoints == ("checkpoint_final.pth",) * 2
        and "--checkpoint checkpoint_final.pth overrides" in notes[0]
    )
    fusion, notes = resolve_fusion(["x"], "--input", FusionFlags())
    assert (fusion.mode, fusion.weights, notes) == ("logit", None, [])
    with pytest.raises(FusionSettingsError, match=r"pp.json was tuned on 2 input\(s\) \(a, b\); give --input 2 time"):
        resolve_fusion(["x"], "--input", FusionFlags(weights=[1]), PROB_FILE, "pp.json")
    with pytest.raises(FusionSettingsError, match=r"--weights: 1 weight\(s\) for 2 --model\(s\); give one weight per"):
        resolve_fusion(["x", "y"], "--model", FusionFlags(weights=[1]))
    with pytest.raises(FusionSettingsError, match=r"--weights -1.0,1.0: fusion weights must be finite and >= 0"):
        resolve_fusion(["x", "y"], "--model", FusionFlags(weights=[-1, 1]))
    with pytest.raises(FusionSettingsError, match=r"--checkpoint best.pt: checkpoint 'best.pt' is not a checkpoint"):
        resolve_fusion(["x"], "--model", FusionFlags(checkpoint="best.pt"))
    untuned = FusionSpec("logit", (1.0, 2.0, 3.0))  # a hand-written file: no inputs recorded
    with pytest.raises(FusionSettingsError, match=r"f.json \(fusion.weights\): 3 weight\(s\) for 2 --model\(s\)"):
        resolve_fusion(["x", "y"], "--model", FusionFlags(), untuned, "f.json")


def test_weight_zero_inputs_are_left_out() -> None:
    fusion, _ = resolve_fusion(["a", "b", "c"], "--input", FusionFlags(weights=[0.5, 0, 0.5]))
    assert kept_inputs(fusion) == [0, 2]
    assert without_unused(fusion).inputs == ("a", "c") and without_unused(fusion).weights == (0.5, 0.5)
