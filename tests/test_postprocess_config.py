"""PostprocessConfig validation and postprocess.json (config_file): round trip and a refusal per bad key."""

from __future__ import annotations

import json

import pytest

from nnunetv2_topo.postprocessing import (
    POSTPROCESS_FILE_VERSION,
    FusionSpec,
    PostprocessConfig,
    PostprocessFile,
    load_postprocess_file,
    save_postprocess_file,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"threshold": 0.5, "hysteresis_high": 0.4}, "hysteresis_high must lie between threshold"),
        ({"hysteresis_high": 1.0}, "hysteresis_high"),
        ({"hysteresis_high": True}, "hysteresis_high"),
        ({"min_component_size": -1}, "min_component_size"),
        ({"min_component_size": 2.5}, "min_component_size"),
        ({"min_component_size": True}, "min_component_size"),
        ({"plug_holes": 1}, "plug_holes must be true or false"),
        ({"plug_method": "fancy"}, "plug_method must be one of lut, axis, both"),
        ({"closing_radius": 2}, "closing_radius"),
        ({"closing_radius": (1, 2, 3)}, "closing_radius"),
        ({"closing_radius": (0, 11)}, "closing_radius"),
        ({"closing_radius": "12"}, "closing_radius"),
        ({"patch_holes": -5}, "patch_holes"),
        ({"fill_holes": "yes"}, "fill_holes"),
    ],
)
def test_config_rejects_bad_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PostprocessConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_key() -> None:
    c = PostprocessConfig(threshold=0.3, hysteresis_high=0.85, closing_radius=[2, 1], patch_holes=100)
    assert c.closing_radius == (2, 1)
    d = c.to_dict()
    assert d["closing_radius"] == [2, 1] and json.loads(json.dumps(d)) == d
    assert PostprocessConfig.from_dict(d) == c
    assert PostprocessConfig.from_dict({"threshold": 0.3}) == PostprocessConfig(threshold=0.3)
    with pytest.raises(ValueError, match="unknown post-processing key.* min_size; known keys: threshold"):
        PostprocessConfig.from_dict({"min_size": 3})
    with pytest.raises(ValueError, match="JSON object"):
        PostprocessConfig.from_dict([1])


def test_file_round_trip(tmp_path) -> None:
    pf = PostprocessFile(
        FusionSpec("prob", (0.4, 0.6), ("m1", "m2")),
        PostprocessConfig(threshold=0.35, closing_radius=(2, 1)),
        {"score": 0.61, "grid": [{"threshold": 0.3, "score": 0.6}]},
    )
    path = tmp_path / "sub" / "postprocess.json"
    save_postprocess_file(path, pf)
    assert load_postprocess_file(path) == pf
    assert json.loads(path.read_text())["version"] == POSTPROCESS_FILE_VERSION
    assert [p.name for p in path.parent.iterdir()] == ["postprocess.json"]  # no temporary file left


def test_save_refuses_non_finite_and_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "postprocess.json"
    with pytest.raises(ValueError, match=r"measured.score holds nan"):
        save_postprocess_file(path, PostprocessFile(measured={"score": float("nan")}))
    assert list(tmp_path.iterdir()) == []


def _good() -> dict:
    return {
        "version": 1,
        "fusion": {"mode": "logit", "weights": [1, 2], "inputs": ["a", "b"]},
        "steps": {"threshold": 0.4},
        "measured": {},
    }


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(extra=1), "unknown key.* extra"),
        (lambda d: d.pop("version"), "missing key 'version'"),
        (lambda d: d.update(version=2), "key 'version' is 2; this release reads version 1"),
        (lambda d: d["fusion"].update(mode="max"), "key 'fusion': mode must be one of logit, prob"),
        (lambda d: d["fusion"].update(weights=[1]), "key 'fusion': 1 fusion weight.* for 2 input"),
        (lambda d: d["fusion"].update(weights=[1, -2]), "key 'fusion': .*>= 0"),
        (lambda d: d["fusion"].update(weights="12"), "key 'fusion': weights must be null or a list"),
        (lambda d: d["fusion"].update(inputs="ab"), "key 'fusion': inputs must be a list"),
        (lambda d: d["fusion"].update(size=1), "unknown key.* fusion.size"),
        (lambda d: d.update(fusion=[]), "key 'fusion' must be a JSON object"),
        (lambda d: d["steps"].update(threshold=2), "key 'steps': threshold must be a number in"),
        (lambda d: d["steps"].update(radius=2), "key 'steps': unknown post-processing key.* radius"),
        (lambda d: d.update(measured=[]), "key 'measured' must be a JSON object"),
    ],
)
def test_load_refuses_bad_files_naming_the_key(tmp_path, edit, match) -> None:
    d = _good()
    edit(d)
    path = tmp_path / "pp.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=f"pp.json: {match}"):
        load_postprocess_file(path)


def test_load_refuses_missing_and_invalid_json(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such post-processing file"):
        load_postprocess_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_postprocess_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="list.json: expected a JSON object"):
        load_postprocess_file(tmp_path / "list.json")
