"""Typed recipes (`occvla_hf.training.recipe`): unknown keys with suggestions, config fields, types, `null` removing
keys, `extends:`, and the shipped recipes parsed into their dataclasses."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from occvla_hf.cli import main
from occvla_hf.training.joint import DataRecipe, JointRecipe, ModelRecipe, build_model_and_processor, train_joint
from occvla_hf.training.recipe import (
    BUILTIN_RECIPES_DIR,
    apply_overrides,
    builtin_recipes,
    load_recipe,
    merge_recipes,
    parse_recipe,
    parse_value,
    read_recipe_file,
    resolve_recipe,
    resolve_resume_checkpoint,
)
from occvla_hf.training.vae import VAERecipe, train_from_config
from occvla_hf.training.weight_schedule import OccupancyWeightSchedule

REPO_ROOT = Path(__file__).resolve().parents[2]
MINIMAL_JOINT: dict[str, Any] = {"data": {"path": "data/x"}, "training": {"output_dir": "runs/x"}}


def joint(**changes: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(MINIMAL_JOINT)
    recipe.update(changes)
    return recipe


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


# ----------------------------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (joint(ocupancy_vae="v"), r"joint recipe: unknown keys \['ocupancy_vae'\] \(did you mean 'occupancy_vae'\?\)"),
        (
            joint(data={"path": "x", "eval_splt": "val"}),
            r"data: unknown keys \['eval_splt'\] \(did you mean 'eval_split'",
        ),
        (joint(occupancy_weight_schedule={"ramp_step": 5}), r"occupancy_weight_schedule: .*did you mean 'ramp_steps'"),
        (joint(model={"config": {"num_view": 3}}), r"model.config: unknown OccVLAConfig fields \['num_view'\] \(did"),
        (
            joint(training={"output_dir": "o", "max_step": 3}),
            r"training: unknown TrainingArguments fields \['max_step'",
        ),
        (joint(lora={"rank": 4, "lora_alhpa": 8}), r"lora: .* \(did you mean 'lora_alpha' for 'lora_alhpa'"),
    ],
)
def test_unknown_keys_fail_with_the_closest_known_key(recipe, message):
    with pytest.raises(ValueError, match=message):
        JointRecipe.from_dict(recipe)


def test_unknown_keys_of_a_vae_recipe_and_its_model_config_fail_with_a_suggestion():
    with pytest.raises(ValueError, match=r"vae recipe: unknown keys \['eval_splits'\] \(did you mean 'eval_split'"):
        VAERecipe.from_dict({"dataset": "d", "eval_splits": "val", "training": {"output_dir": "o"}})
    with pytest.raises(ValueError, match=r"model: unknown OccupancyVAEConfig fields \['latent_chanels'\] \(did"):
        train_from_config({"dataset": "d", "model": {"latent_chanels": 4}, "training": {"output_dir": "o"}})


def test_the_command_line_reports_a_typo_before_loading_anything(tmp_path, capsys):
    path = write(tmp_path / "joint.yaml", joint(stage="joint", model={"config": {"num_view": 3}}))
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path)])
    error = capsys.readouterr().err
    assert "model.config: unknown OccVLAConfig fields ['num_view'] (did you mean 'num_views'?)" in error
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path), "--model.config.num_view", "null", "--training.max_step", "3"])
    assert "did you mean 'max_steps'?" in capsys.readouterr().err


def test_a_misspelt_model_config_key_fails_before_any_model_is_built():
    with pytest.raises(ValueError, match="did you mean 'num_views'"):
        build_model_and_processor({"config": {"num_view": 3}})


# ------------------------------------------------------------------------------------------ types and defaults


@pytest.mark.parametrize(
    ("recipe", "error", "message"),
    [
        (joint(occupancy_supervision="false"), TypeError, "occupancy_supervision: expected bool, got 'false'"),
        (joint(data={"path": "x", "tasks": "qa"}), TypeError, r"data.tasks: expected list\[str\], got 'qa'"),
        (joint(occupancy_weight_schedule={"ramp_steps": 2.5}), TypeError, "occupancy_weight_schedule.ramp_steps: exp"),
        (joint(resume_from_checkpoint=3), TypeError, "resume_from_checkpoint: expected str or bool or null, got 3"),
        (joint(data=None), ValueError, "data.path: required, an `occvla-hf data build` output folder"),
        (joint(model="paligemma"), TypeError, "model: expected a mapping of keys, got str"),
    ],
)
def test_values_are_checked_against_the_field_types(recipe, error, message):
    with pytest.raises(error, match=message):
        JointRecipe.from_dict(recipe)
    with pytest.raises(TypeError, match="class_weights: expected 'frequency' or null, got 'inverse'"):
        VAERecipe.from_dict({"dataset": "d", "class_weights": "inverse", "training": {"output_dir": "o"}})


def test_null_and_missing_keys_take_the_field_defaults():
    parsed = JointRecipe.from_dict(joint(occupancy_supervision=None, occupancy_weight_schedule=None, lora=None))
    assert parsed.occupancy_supervision is True and parsed.lora is None
    assert parsed.occupancy_weight_schedule == OccupancyWeightSchedule()
    assert parsed.model == ModelRecipe() and parsed.data == DataRecipe(path="data/x")
    assert parsed.data.tasks == ["planning", "qa"] and parsed.dataset_configs == ["planning", "qa", "occupancy"]
    qa_only = JointRecipe.from_dict(joint(data={"path": "data/x", "tasks": ["qa"]}, occupancy_supervision=False))
    assert qa_only.dataset_configs == ["qa", "planning"]  # the planning rows hold the QA rows' images
    schedule = JointRecipe.from_dict(joint(occupancy_weight_schedule={"start_factor": 0, "ramp_steps": 10}))
    assert schedule.occupancy_weight_schedule == OccupancyWeightSchedule(start_factor=0.0, ramp_steps=10)
    assert JointRecipe.from_dict(parsed) is parsed  # a parsed recipe passes through


# ------------------------------------------------------------------------------------------- null overrides


def test_a_null_override_removes_the_key(tmp_path):
    path = write(tmp_path / "joint.yaml", joint(stage="joint", model={"from_vlm": "google/paligemma", "num_views": 6}))
    recipe = load_recipe(
        path, ["--model.from_vlm", "null", "--model.num_views=null", "--model.from_pretrained", "ckpt"]
    )
    assert recipe["model"] == {"from_pretrained": "ckpt"}
    assert parse_recipe(recipe).model == ModelRecipe(from_pretrained="ckpt")
    unchanged = apply_overrides(recipe, ["--lora.r", "null", "--data.eval_split", "null"])
    assert "lora" not in unchanged and unchanged["data"] == recipe["data"]  # removing what is not there: no-op
    with pytest.raises(ValueError, match="model: give from_pretrained or from_vlm, not both"):
        parse_recipe(load_recipe(path, ["--model.from_pretrained", "ckpt"]))


def test_a_null_override_in_the_vae_cli_scores_the_training_split(tmp_path):
    recipe = {"stage": "vae", "dataset": "d", "eval_split": "val", "training": {"output_dir": "o"}}
    path = write(tmp_path / "vae.yaml", recipe)
    recipe = load_recipe(path, ["--eval_split", "null"])
    assert "eval_split" not in recipe and parse_recipe(recipe).eval_split is None


# --------------------------------------------------------------------------------------------------- extends


def test_a_recipe_extends_its_parent_and_changes_only_what_it_names(tmp_path):
    parent = joint(
        stage="joint",
        model={"config": {"num_views": 6, "use_ego_status": True}},
        lora={"r": 4},
        data={"path": "data/x", "tasks": ["planning", "qa"], "eval_split": "val"},
    )
    write(tmp_path / "base.yaml", parent)
    (tmp_path / "ablations").mkdir()
    child = {
        "extends": "../base.yaml",  # relative to the child's folder
        "occupancy_supervision": False,
        "model": {"config": {"use_ego_status": False}},
        "data": {"tasks": ["planning"], "eval_split": None},
        "lora": None,
    }
    write(tmp_path / "ablations" / "no_occ.yaml", child)
    write(tmp_path / "ablations" / "short.yaml", {"extends": "no_occ.yaml", "training": {"max_steps": 5}})
    recipe = load_recipe(tmp_path / "ablations" / "short.yaml", ["--training.seed", "3"])
    assert recipe == {
        "stage": "joint",
        "occupancy_supervision": False,
        "model": {"config": {"num_views": 6, "use_ego_status": False}},  # mappings merge key by key
        "data": {"path": "data/x", "tasks": ["planning"]},  # lists replace, null removes
        "training": {"output_dir": "runs/x", "max_steps": 5, "seed": 3},
    }
    parsed = parse_recipe(recipe)
    assert parsed.data.eval_split is None and parsed.lora is None and parsed.dataset_configs == ["planning"]
    assert merge_recipes({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


def test_extends_rejects_cycles_and_missing_parents(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml", "stage": "joint"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ValueError, match="extends: recipes extend each other in a cycle"):
        read_recipe_file(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"extends": "missing.yaml"})
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        read_recipe_file(tmp_path / "c.yaml")


def test_the_shipped_ablation_recipes_are_short_override_files():
    for name in ("joint", "embedded_joint"):
        ablation = REPO_ROOT / "configs" / f"{name}_no_occ.yaml"
        keys = [line for line in ablation.read_text().splitlines() if line and not line.startswith("#")]
        assert keys[0] == f"extends: {name}.yaml" and "occupancy_supervision: false" in keys and len(keys) <= 5
        main_recipe = parse_recipe(load_recipe(ablation.with_name(f"{name}.yaml")))
        no_occ = parse_recipe(load_recipe(ablation))
        assert main_recipe.occupancy_supervision and not no_occ.occupancy_supervision
        assert no_occ.model == main_recipe.model and no_occ.data == main_recipe.data


def test_every_shipped_recipe_parses_into_its_stage_dataclass():
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        parsed = parse_recipe(load_recipe(path))
        assert isinstance(parsed, VAERecipe if "vae" in path.name else JointRecipe), path.name


def test_train_joint_rejects_a_typed_recipe_error_before_loading_data():
    with pytest.raises(ValueError, match="did you mean 'occupancy_supervision'"):
        train_joint(joint(occupancy_supervison=False))


def _checkpoints(root: Path, complete: list[int], partial: list[int]) -> Path:
    root.mkdir(parents=True)
    for step in complete + partial:
        (root / f"checkpoint-{step}").mkdir(parents=True)
        (root / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
    for step in complete:
        (root / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (root / "checkpoint-notes").mkdir()  # not a checkpoint folder
    return root


@pytest.mark.parametrize(
    ("complete", "partial", "expected"),
    [([2, 4], [], 4), ([2], [4], 2), ([2, 10], [12, 14], 10), ([9], [10], 9)],
    ids=["all-complete", "newest-partial", "two-partial", "numeric-order"],
)
def test_resume_true_takes_the_newest_complete_checkpoint_and_names_the_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, complete: list[int], partial: list[int], expected: int
):
    root = _checkpoints(tmp_path / "run", complete, partial)
    with caplog.at_level(logging.WARNING, logger="occvla_hf.training.recipe"):
        assert resolve_resume_checkpoint(True, root) == str(root / f"checkpoint-{expected}")
    for step in partial:
        assert f"skipping {root / f'checkpoint-{step}'}, it has no trainer_state.json" in caplog.text
    assert ("skipping" in caplog.text) == bool(partial)


@pytest.mark.parametrize(("complete", "partial"), [([], []), ([], [3, 5])], ids=["empty", "only-partial"])
def test_resume_true_without_a_complete_checkpoint_names_the_folder(tmp_path: Path, complete, partial):
    root = _checkpoints(tmp_path / "run", complete, partial)
    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint: no complete checkpoint") as error:
        resolve_resume_checkpoint(True, root)
    assert str(root) in str(error.value)
    assert all(f"checkpoint-{step}" in str(error.value) for step in partial)


@pytest.mark.parametrize("resume", [None, False, "some/checkpoint-3"])
def test_resume_values_other_than_true_pass_through(tmp_path: Path, resume):
    assert resolve_resume_checkpoint(resume, tmp_path) == resume


# ------------------------------------------------------------------------------------- shipped recipes


def test_shipped_recipes_resolve_by_name_and_by_their_documented_path(tmp_path, monkeypatch):
    names = builtin_recipes()
    assert {"joint", "joint_no_occ", "vae", "embedded_joint", "embedded_vae"} <= set(names)
    monkeypatch.chdir(tmp_path)  # no configs/ here: as after `pip install occvla-hf`
    for spelling in ("joint", "joint.yaml", "configs/joint.yaml"):
        assert resolve_recipe(spelling) == BUILTIN_RECIPES_DIR / "joint.yaml"
    assert load_recipe("joint_no_occ")["occupancy_supervision"] is False  # its `extends: joint.yaml` resolves too
    assert load_recipe("embedded_vae")["stage"] == "vae"
    local = tmp_path / "joint.yaml"
    local.write_text("stage: vae\n")
    assert resolve_recipe("joint.yaml").resolve() == local  # a file of that name wins over the shipped recipe
    with pytest.raises(FileNotFoundError, match="built-in recipe"):
        resolve_recipe("jiont")
    with pytest.raises(FileNotFoundError, match="no recipe file"):
        resolve_recipe("elsewhere/joint.yaml")


def test_the_wheel_ships_every_recipe(tmp_path):
    """`pip wheel` of a copy of the source tree: the wheel holds configs/*.yaml (and the accelerate configs)."""
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"
    shutil.copytree(
        root,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", "__pycache__", "build", "*.egg-info", "tests", "benchmarks", ".*"),
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source)]
    subprocess.run([*command, "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("occvla_hf-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("occvla_hf/configs/")}
    expected = {
        f"occvla_hf/configs/{path.relative_to(root / 'configs')}" for path in (root / "configs").rglob("*.yaml")
    }
    assert expected and shipped == expected


def test_override_values_read_only_true_and_false_as_booleans():
    """`--training.save_strategy no` is TrainingArguments' "no" (YAML 1.1 would read it, yes/on/off too, as a bool)."""
    recipe = load_recipe("joint", ["--training.save_strategy", "no", "--training.eval_strategy", "no"])
    assert recipe["training"]["save_strategy"] == recipe["training"]["eval_strategy"] == "no"
    assert [parse_value(text) for text in ("yes", "on", "off", "true", "False")] == ["yes", "on", "off", True, False]
    assert load_recipe("joint")["training"]["bf16"] is True
