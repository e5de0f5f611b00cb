"""The loss-term registry: every consumer (TopologyLoss, the configuration keys, the target transform, the trainer's
printed and saved configuration) is derived from the terms' own declarations; adding a term is one registry entry."""

from __future__ import annotations

import json

import pytest
from loss_helpers import IGNORE, make_batch
from trainer_fixtures import fold_dir, log_text, make_trainer

from nnunetv2_topo.losses import TERMS, LossTerm, TermSpec, TopologyLoss
from nnunetv2_topo.losses.masking import FgParts
from nnunetv2_topo.setting_checks import Param, number, positive
from nnunetv2_topo.trainers import config as C
from nnunetv2_topo.trainers import nnUNetTrainerTopoWarmup
from nnunetv2_topo.transforms import TopoTargetsTransform

POWER = Param("toy_power", "power", 2.0, "float > 0", "exponent of the toy term", number, positive)


class ToySkeletonTerm(LossTerm):
    """A term written for this test: mean of ``(1 - p)^power`` on the skeleton voxels."""

    def __init__(self, ignore_label=IGNORE, power: float = POWER.default, tube: int = 0) -> None:
        super().__init__(ignore_label)
        self.power = POWER.checked(power)
        self.tube = tube

    def compute(self, parts: FgParts, skeleton=None, **maps):
        skel = self.target_map(parts, "skeleton", skeleton, skeleton_tube=self.tube)
        return ((1 - parts.prob) ** self.power * skel).sum() / skel.sum().clamp_min(1.0)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> TermSpec:
    spec = TermSpec("toy", ToySkeletonTerm, target="skeleton", params=(POWER,))
    monkeypatch.setitem(TERMS, "toy", spec)  # the one line a new term adds to losses/registry.py
    return spec


def test_a_registered_term_reaches_the_loss_the_config_and_the_transform(toy: TermSpec) -> None:
    logits, labels = make_batch()
    loss_fn = TopologyLoss({"dice": 1.0, "toy": 0.5}, ignore_label=IGNORE, toy_power=3.0, skeleton_tube=1)
    total = loss_fn(logits, labels)
    terms = loss_fn.last_terms
    expected = ToySkeletonTerm(IGNORE, power=3.0, tube=1)(logits, labels).item()
    assert terms["toy"] == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(terms["dice"] + 0.5 * expected, rel=1e-6)
    assert loss_fn.required_targets == ("skeleton",)
    assert loss_fn.target_params == {"skeleton_tube": 1}
    with pytest.raises(ValueError, match=r"toy_power must be > 0 \(float > 0\), got -1"):
        TopologyLoss({"dice": 1.0}, toy_power=-1)

    # the configuration knows the term's weight and parameter, with default and check
    keys = C.all_keys()
    assert keys["toy_power"].default == 2.0 and "toy" in keys["loss_weights"].meaning
    cfg = C.resolve_config({"loss_weights": {"toy": 1, "dice": 1}, "toy_power": 1.5})
    assert cfg["loss_weights"] == {"dice": 1.0, "toy": 1.0} and cfg["toy_power"] == 1.5
    with pytest.raises(C.TopoConfigError, match=r"'toy_power' = 0 is invalid: must be > 0 \(expected float > 0\)"):
        C.resolve_config({"toy_power": 0}, source="f.yaml")
    warnings = C.check_consistency(C.resolve_config({"toy_power": 4}), "f.yaml")
    assert warnings == [
        "toy_power = 4.0 has no effect: the 'toy' term has weight 0 (loss_weights = "
        + json.dumps(C.DEFAULT_LOSS_WEIGHTS)
        + ")"
    ]

    # the target transform is built from what the loss needs
    transform = TopoTargetsTransform(loss_fn.required_targets, IGNORE, **loss_fn.target_params)
    seg = transform(segmentation=labels[0].clone())["segmentation"]
    assert seg.shape[0] == 2


def test_a_parameter_shared_by_two_terms_warns_only_when_both_are_off(toy: TermSpec) -> None:
    cfg = C.resolve_config({"loss_weights": {"toy": 1}, "skeleton_tube": 2})
    assert C.check_consistency(cfg, "f.yaml") == []
    cfg = C.resolve_config({"loss_weights": {"dice": 1}, "skeleton_tube": 2})
    (warning,) = C.check_consistency(cfg, "f.yaml")
    assert warning.startswith("skeleton_tube = 2 has no effect: the 'skeleton_recall' and the 'toy' term has weight")


def test_conflicting_declarations_of_one_parameter_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    other = Param("focal_alpha", "alpha", 0.5, "float", "another alpha", number)
    monkeypatch.setitem(TERMS, "clash", TermSpec("clash", ToySkeletonTerm, params=(other,)))
    with pytest.raises(ValueError, match="loss parameter 'focal_alpha' is declared twice with different definitions"):
        TopologyLoss({"dice": 1})
    with pytest.raises(ValueError, match=r"loss term 'bad': unknown target 'edges'; known: \['skeleton', 'band'\]"):
        TermSpec("bad", ToySkeletonTerm, target="edges")


def test_configuration_holds_the_terms_defaults_and_null_means_default() -> None:
    cfg = C.resolve_config()
    used = TopologyLoss(cfg["loss_weights"]).params
    assert {k: cfg[k] for k in used} == used  # no null: the printed configuration is the used one
    assert used == {"focal_alpha": 0.25, "focal_gamma": 2.0, "boundary_band": (3.0, 5.0), "cldice_iterations": 3,
                    "skeleton_tube": 0, "betti_matching_crop": 32, "betti_matching_every": 1}  # fmt: skip
    assert C.resolve_config({"focal_alpha": None, "boundary_band": None}) == cfg


def test_printed_configuration_equals_the_saved_one(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, config={"focal_gamma": 1.5})
    trainer.save_topo_config()
    folder = fold_dir(tmp_path)
    saved = json.loads((folder / "topo_config.json").read_text())["config"]
    block = C.format_config(trainer.topo_config)
    assert block in log_text(folder)  # the block the trainer printed at start-up
    printed = {k.strip(): json.loads(v) for k, v in (line.split(" : ", 1) for line in block.splitlines())}
    assert printed == saved
    assert all(printed[k] is not None for k in C.loss_keys())  # the terms' defaults, not null
    assert saved["focal_gamma"] == 1.5 and saved["focal_alpha"] == 0.25 and saved["boundary_band"] == [3.0, 5.0]
    assert trainer.loss.topology_loss.params["focal_gamma"] == 1.5
