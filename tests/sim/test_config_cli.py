"""Settings, presets, argument errors and the `occvla-hf sim` command."""

from __future__ import annotations

import json

import pytest

from occvla_hf.cli import main
from occvla_hf.sim import PRESETS, SimConfig, generate_dataset
from occvla_hf.sim.config import resolve_config


def test_config_derived_sizes():
    config = SimConfig(scale=0.25, scene_duration_s=20.0)
    assert config.image_size_px == (400, 225)
    assert config.num_keyframes == 40 and config.steps_per_keyframe == 2


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="scale"):
        SimConfig(scale=2.0)
    with pytest.raises(ValueError, match="sim_step_s"):
        SimConfig(sim_step_s=0.3)
    with pytest.raises(ValueError, match="preset"):
        resolve_config("huge", None)


def test_presets_are_small_and_scale_overrides_them():
    assert PRESETS["mini"].num_scenes == 10 and PRESETS["tiny"].num_scenes == 2
    assert resolve_config("tiny", None, scale=0.05).scale == 0.05
    assert resolve_config("tiny", None).scene_duration_s == PRESETS["tiny"].config.scene_duration_s


def test_generate_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_scenes"):
        generate_dataset(tmp_path / "a", seed=0)
    with pytest.raises(ValueError, match="num_scenes"):
        generate_dataset(tmp_path / "b", num_scenes=11, version="v1.0-mini")
    with pytest.raises(ValueError, match="version"):
        generate_dataset(tmp_path / "c", num_scenes=1, version="v2.0")


def test_sim_command_writes_a_dataroot(tmp_path, capsys):
    out = tmp_path / "root"
    code = main(
        [
            "sim",
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--scenes",
            "1",
            "--seed",
            "4",
            "--scale",
            "0.05",
            "--workers",
            "1",
        ]
    )
    assert code == 0
    assert "wrote 1 scenes" in capsys.readouterr().out
    scenes = json.loads((out / "v1.0-mini" / "scene.json").read_text())
    assert [s["name"] for s in scenes] == ["scene-0061"]
    sample_data = json.loads((out / "v1.0-mini" / "sample_data.json").read_text())
    assert {(r["width"], r["height"]) for r in sample_data if r["fileformat"] == "jpg"} == {(80, 45)}
