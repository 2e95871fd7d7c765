"""The stage-2 recipe `train_joint` and `occvla-hf train joint`: training on a dataset folder in the
`occvla-hf data build` layout, the saved checkpoint, the ablation, LoRA, from_vlm, resume, the CLI, the shipped
YAMLs, the shipped recipe pointed at a small checkpoint by overrides."""

from __future__ import annotations

import copy
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import (
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    SiglipImageProcessorPil,
    TrainingArguments,
    set_seed,
)

from occvla_hf.class_labels import label_name, label_names
from occvla_hf.cli import main
from occvla_hf.data.keyframes import join_keyframes
from occvla_hf.data.load import load_configs
from occvla_hf.evaluation.baselines import constant_velocity_trajectories, has_velocity
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from occvla_hf.processing import OccVLAProcessor, build_tokenizer, ego_status_statistics
from occvla_hf.processing.processing_occvla import ego_history_statistics
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.joint import (
    DataRecipe,
    JointDataset,
    ModelRecipe,
    build_model_and_processor,
    check_processor_matches_model,
    data_source,
    pretrained_config,
    train_joint,
)
from occvla_hf.training.recipe import load_recipe
from tests.conftest import IMAGE_SIZE_PX, TINY_MODEL_CONFIG

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]
OCCUPANCY_TERMS = ("occupancy_latent_loss", "occupancy_voxel_loss")


def with_changes(recipe: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `recipe` with the keys of each given section updated (non-dict values replace the key)."""
    result = copy.deepcopy(recipe)
    for name, changes in sections.items():
        if isinstance(changes, dict) and isinstance(result.get(name), dict):
            result[name].update(changes)
        else:
            result[name] = changes
    return result


def initial_model(recipe: dict[str, Any]) -> OccVLAForPlanning:
    """The model `train_joint(recipe)` starts from (same VAE-derived config, same seed)."""
    vae = OccupancyVAE.from_pretrained(recipe["occupancy_vae"])
    set_seed(recipe["training"].get("seed", 42))
    return build_model_and_processor(recipe["model"], vae)[0]


@pytest.fixture(scope="module")
def joint_run(training_data_dir: Path, occupancy_vae_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """60 steps on sim planning + QA + occupancy, evaluated on the planning rows of mini_val every 30 steps."""
    torch.set_num_threads(1)
    output_dir = tmp_path_factory.mktemp("joint_run")
    recipe = {
        "stage": "joint",
        "model": {"config": TINY_MODEL_CONFIG},
        "occupancy_vae": str(occupancy_vae_dir),
        "data": {
            "path": str(training_data_dir),
            "source": "sim",
            "train_split": "mini_train",
            "eval_split": "mini_val",
        },
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 60,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "eval_strategy": "steps",
            "eval_steps": 30,
            "save_strategy": "no",
            "metric_for_best_model": "stp3_l2_avg_m",
            "greater_is_better": False,
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }
    return train_joint(recipe)


def test_joint_training_reduces_the_total_loss_and_each_term(joint_run):
    logs = joint_run.log_history
    # Task-grouped batches: QA steps have only the LM term, planning steps every term.
    planning_steps = [entry for entry in logs if "trajectory_loss" in entry]
    qa_steps = [entry for entry in logs if "lm_loss" in entry and "trajectory_loss" not in entry and "loss" in entry]
    assert len(planning_steps) >= 8 and len(qa_steps) >= 30
    assert all("occupancy_latent_loss" in entry for entry in planning_steps)
    assert not any(name in entry for entry in qa_steps for name in OCCUPANCY_TERMS)
    for key in ("loss", "lm_loss", "occupancy_latent_loss"):
        values = [entry[key] for entry in planning_steps]
        assert np.mean(values[-4:]) < np.mean(values[:4]), f"{key}: {values}"
    # The new head starts as the constant-velocity planner, which these rows' futures nearly follow: its loss starts
    # at a floor of ~1e-4 (smooth L1, metres) where a decrease over 60 steps is noise. It must stay there.
    trajectory = [entry["trajectory_loss"] for entry in planning_steps]
    assert max(trajectory) < 1e-2, trajectory
    qa_losses = [entry["loss"] for entry in qa_steps]
    assert np.mean(qa_losses[-4:]) < np.mean(qa_losses[:4])
    evaluations = [entry for entry in logs if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [30, 60, 60]  # during training, then the final evaluation
    assert evaluations[-1]["eval_stp3_l2_avg_m"] < evaluations[0]["eval_stp3_l2_avg_m"] * 2  # finite, comparable
    assert {f"eval_{name}" for name in ("lm_loss", "trajectory_loss", "occupancy_latent_loss")} <= set(evaluations[0])
    assert joint_run.metrics["eval_stp3_l2_avg_m"] == pytest.approx(evaluations[-1]["eval_stp3_l2_avg_m"])


def test_joint_output_folder_loads_back_with_its_processor_vae_and_card(joint_run, training_data_dir):
    output_dir = joint_run.output_dir
    loaded = OccVLAForPlanning.from_pretrained(output_dir).eval()
    processor = OccVLAProcessor.from_pretrained(output_dir)
    rows = load_configs(training_data_dir)
    ego = rows["planning"]["mini_train"].with_format("numpy")[:]
    mean, std = ego_status_statistics(ego["ego_status"], ego["ego_status_valid"].astype(bool))
    assert processor.ego_status_mean == pytest.approx(mean) and processor.ego_status_std == pytest.approx(std)
    assert loaded.occupancy_vae is not None  # the stage-1 VAE travels with the checkpoint
    for name, parameter in joint_run.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], parameter, msg=name)
    val = JointDataset({"planning": rows["planning"]["mini_val"]}, rows["occupancy"]["mini_val"])
    batch = OccVLADataCollator(processor)([val[0], val[1]])
    with torch.no_grad():
        expected, got = joint_run.model(**batch), loaded(**batch)
    torch.testing.assert_close(got.trajectory, expected.trajectory)
    torch.testing.assert_close(got.occupancy_latent_loss, expected.occupancy_latent_loss)
    card = (output_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "Synthetic scenes" in card and "| ST-P3 |" in card
    metadata = ModelCard(card).data  # what the Hub validates: no local path in it, the eval L2 in the model-index
    assert metadata.datasets is None and metadata.base_model is None
    assert str(training_data_dir) in card and str(training_data_dir) not in card.split("---")[1]
    assert {result.metric_type for result in metadata.eval_results} == {"l2"}
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 60


def test_joint_dataset_gives_qa_rows_the_images_of_their_keyframes_planning_row(training_data_dir):
    configs = load_configs(training_data_dir, ["planning", "qa"])
    planning, qa = configs["planning"]["mini_train"], configs["qa"]["mini_train"]
    with pytest.raises(ValueError, match=r"datasets\['qa'\]: the rows hold no images"):
        JointDataset({"planning": planning, "qa": qa})  # the qa config stores none
    rows = JointDataset({"planning": planning, "qa": join_keyframes(qa, planning)})
    questions = [index for index, task in enumerate(rows.tasks) if task == "qa"]
    assert len(questions) == len(qa)
    for index in (questions[0], questions[-1]):
        row = rows[index]
        keyframe = planning[planning["sample_token"].index(row["sample_token"])]
        assert row["question"] and len(row["images"]) == 6
        for got, expected in zip(row["images"], keyframe["images"], strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_a_new_model_starts_as_the_constant_velocity_planner(tiny_recipe, training_data_dir):
    recipe = with_changes(tiny_recipe, training={"learning_rate": 0.0, "max_steps": 1})
    result = train_joint(recipe)  # learning rate 0: the saved model is the initial one
    rows = load_configs(training_data_dir)["planning"]["mini_val"]
    valid = has_velocity(np.asarray(rows["ego_status_valid"], dtype=bool))
    rows = rows.select(np.flatnonzero(valid)[:8])
    processor = OccVLAProcessor.from_pretrained(result.output_dir)
    with torch.no_grad():
        inputs = processor.from_rows(rows, task="planning", training=False)
        predicted = result.model.eval()(**inputs).trajectory.numpy()
    expected = constant_velocity_trajectories(np.asarray(rows["ego_status"], dtype=np.float32))
    np.testing.assert_allclose(predicted, expected, atol=1e-3)


def test_a_new_model_without_ego_status_starts_as_the_constant_velocity_planner_of_its_history(
    tiny_recipe, training_data_dir
):
    config = {**TINY_MODEL_CONFIG, "use_ego_status": False, "ego_history_steps": 4}
    recipe = with_changes(tiny_recipe, model={"config": config}, training={"learning_rate": 0.0, "max_steps": 1})
    result = train_joint(recipe)
    rows = load_configs(training_data_dir)["planning"]["mini_val"]
    rows = rows.select(np.flatnonzero(np.asarray(rows["past_trajectory_mask"], dtype=bool)[:, -1])[:8])
    processor = OccVLAProcessor.from_pretrained(result.output_dir)
    with torch.no_grad():
        inputs = processor.from_rows(rows, task="planning", training=False)
        predicted = result.model.eval()(**inputs).trajectory.numpy()
    last = np.asarray(rows["past_trajectory"], dtype=np.float32)[:, -1]  # (N, 2) metres, 0.5 s ago
    np.testing.assert_allclose(predicted, -np.arange(1, 7)[None, :, None] * last[:, None], atol=1e-3)


def test_the_reasoning_target_trains_on_the_reasoning_then_the_meta_action(tiny_recipe, training_data_dir):
    """The options together: reasoning target, <traj> after the text, 2 s of ego history, the command prompt."""
    config = {**TINY_MODEL_CONFIG, "trajectory_position": "after_text", "ego_history_steps": 4}
    recipe = with_changes(tiny_recipe, model={"config": config}, training={"max_steps": 1}, occupancy_supervision=False)
    result = train_joint({**recipe, "planning_target": "reasoning", "use_command": True})
    processor = OccVLAProcessor.from_pretrained(result.output_dir)
    assert processor.planning_target == result.processor.planning_target == "reasoning" and processor.use_command
    assert (processor.trajectory_position, processor.ego_history_steps) == ("after_text", 4)
    planning = load_configs(training_data_dir)["planning"]["mini_train"].with_format("numpy")[:]
    expected = ego_history_statistics(planning["past_trajectory"], planning["past_trajectory_mask"].astype(bool), 4)
    assert (processor.ego_history_mean, processor.ego_history_std) == expected and len(expected[0]) == 8
    rows = JointDataset({"planning": load_configs(training_data_dir)["planning"]["mini_train"]})
    batch = OccVLADataCollator(processor, occupancy_supervision=False)([rows[0], rows[1]])
    for index, labels in enumerate(batch["labels"]):
        row = rows[index]
        expected = f"{row['reasoning']}\n{label_name('meta_action', row['meta_action'])}"  # stored as its class id
        assert processor.tokenizer.decode(labels[labels != -100], skip_special_tokens=True) == expected
    assert batch["ego_history"].shape == (2, 4, 2)
    assert (batch["input_ids"] == processor.traj_token_id).sum(dim=1).tolist() == [1, 1]
    plan = result.model.plan(**processor.from_rows([rows[0]], task="planning", training=False), max_new_tokens=4)
    assert plan.trajectory.shape == (1, 6, 2) and torch.isfinite(plan.trajectory).all()
    with pytest.raises(TypeError, match="planning_target: expected 'meta_action' or 'reasoning'"):
        train_joint({**recipe, "planning_target": "thoughts"})


def test_ablation_recipe_trains_without_any_occupancy_term(tiny_recipe):
    recipe = with_changes(tiny_recipe, occupancy_supervision=False)
    result = train_joint(recipe)
    losses = [entry for entry in result.log_history if "loss" in entry]
    assert len(losses) == 5
    assert not any(name in entry for entry in losses for name in OCCUPANCY_TERMS)
    assert any("trajectory_loss" in entry for entry in losses)
    initial = initial_model(recipe)
    for name, parameter in result.model.named_parameters():
        if name.startswith(("occupancy_head.", "model.occupancy_queries.")):
            torch.testing.assert_close(parameter, dict(initial.named_parameters())[name], rtol=0, atol=0)
    assert "without occupancy supervision" in (result.output_dir / "README.md").read_text()


# ---------------------------------------------------------------------------------------- label-scarce data


def label_scarce(rows, unlabelled: set[int]):
    """`rows` with the `labelled` column, False at the row numbers in `unlabelled`."""
    return rows.add_column("labelled", [index not in unlabelled for index in range(len(rows))])


def test_unlabelled_planning_rows_train_occupancy_only_and_are_dropped_without_occupancy(training_data_dir):
    configs = load_configs(training_data_dir)
    planning, occupancy = configs["planning"]["mini_train"], configs["occupancy"]["mini_train"]
    last = len(planning) - 1
    names = label_names("meta_action", planning["meta_action"])
    assert names[last] == "" and all(names[:last])  # the scene's end: no future
    rows = label_scarce(planning, unlabelled={1, 2, last})
    qa = join_keyframes(configs["qa"]["mini_train"], planning)
    with_occupancy = JointDataset({"planning": rows, "qa": qa}, occupancy)
    without = JointDataset({"planning": rows})
    expected = [token for i, token in enumerate(planning["sample_token"]) if i not in {1, 2, last}]
    for dataset in (with_occupancy, without):  # the index: the labelled rows, with occupancy targets or without
        assert [dataset[index]["sample_token"] for index in range(len(expected))] == expected
    assert with_occupancy.tasks == ["planning"] * len(expected) + ["qa"] * len(qa)
    assert with_occupancy.row_counts == {"planning": last - 2, "planning_occupancy_only": 3, "qa": len(qa)}
    assert with_occupancy.describe() == f"planning {last - 2} labelled + 3 occupancy-only, qa {len(qa)}"
    assert with_occupancy.occupancy_only_rows == 3 and without.occupancy_only_rows == 0
    tokens = planning["sample_token"]
    for partner, index in enumerate([1, 2, last]):  # the last keyframe too (no future): occupancy
        labelled_row, occupancy_only = with_occupancy[(0, partner)]  # the sampler's pairs
        assert labelled_row["sample_token"] == tokens[0] and labelled_row["labelled"] and "semantics" in labelled_row
        assert occupancy_only["sample_token"] == tokens[index] and not occupancy_only["labelled"]
        assert occupancy_only["task"] == "planning" and "semantics" in occupancy_only
    for dataset, index in ((with_occupancy, (len(expected), 0)), (without, (0, 0))):
        with pytest.raises(IndexError, match="pairs a row with an occupancy-only row, which only planning rows do"):
            dataset[index]
    assert without.row_counts == {"planning": last - 2, "planning_occupancy_only": 0}
    missing = planning["sample_token"][2]  # an unlabelled keyframe without occupancy labels has nothing to learn
    partial = occupancy.select([i for i, token in enumerate(occupancy["sample_token"]) if token != missing])
    assert JointDataset({"planning": rows}, partial).row_counts["planning_occupancy_only"] == 2
    unmarked = JointDataset({"planning": planning}, occupancy)  # data without the column: labelled throughout
    assert unmarked.row_counts == {"planning": last, "planning_occupancy_only": 0}
    unlabelled_qa = label_scarce(qa, unlabelled=set(range(1, len(qa))))  # QA rows have no occupancy target
    assert JointDataset({"qa": unlabelled_qa}, occupancy).row_counts == {"qa": 1}


def test_the_eval_rows_of_label_scarce_data_are_the_labelled_ones(tiny_recipe, training_data_dir, tmp_path):
    from occvla_hf.training.joint import JointRecipe, joint_datasets

    configs = load_configs(training_data_dir)
    configs["planning"]["mini_train"] = label_scarce(configs["planning"]["mini_train"], unlabelled={0, 3})
    recipe = JointRecipe.from_dict(with_changes(tiny_recipe, data={"eval_split": "mini_train", "max_eval_samples": 3}))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    train, evaluation = joint_datasets(recipe, configs, None, args, None)
    assert train.row_counts["planning_occupancy_only"] == 2
    assert evaluation.row_counts == {"planning": 2, "planning_occupancy_only": 0}
    tokens = configs["planning"]["mini_train"]["sample_token"]
    # 3 evenly spaced among the labelled rows 1, 2, 4, 5: 1, 4 and 5, the scene's end (no future)
    assert [evaluation[index]["sample_token"] for index in range(2)] == [tokens[1], tokens[4]]


def test_shipped_recipes_differ_only_by_the_occupancy_switch():
    main_recipe = load_recipe(REPO_ROOT / "configs" / "joint.yaml")
    ablation = load_recipe(REPO_ROOT / "configs" / "joint_no_occ.yaml")
    assert main_recipe["occupancy_supervision"] is True and ablation["occupancy_supervision"] is False
    assert main_recipe["training"]["output_dir"] != ablation["training"]["output_dir"]
    for recipe in (main_recipe, ablation):
        recipe.pop("occupancy_supervision")
        recipe["training"].pop("output_dir")
    assert main_recipe == ablation
    arguments = TrainingArguments(output_dir="unused", **{**main_recipe["training"], "bf16": False})  # bf16: GPU
    assert arguments.metric_for_best_model == "stp3_l2_avg_m" and not arguments.greater_is_better
    for name in ("ddp", "fsdp"):
        accelerate_config = yaml.safe_load((REPO_ROOT / "configs" / "accelerate" / f"{name}.yaml").read_text())
        assert accelerate_config["mixed_precision"] == "no"  # precision comes from the recipe


def test_cli_trains_5_steps_from_a_yaml_file_and_resumes(tiny_recipe, tmp_path):
    recipe = with_changes(tiny_recipe, training={"save_strategy": "steps", "save_steps": 5})
    recipe.pop("stage")  # the stage comes from the command
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(recipe))
    output_dir = Path(recipe["training"]["output_dir"])
    assert main(["train", "joint", "--config", str(path)]) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 5 and (output_dir / "checkpoint-5").is_dir()
    assert OccVLAForPlanning.from_pretrained(output_dir).config.num_views == 6
    overrides = ["--resume_from_checkpoint", "true", "--training.max_steps", "7"]
    assert main(["train", "joint", "--config", str(path), *overrides]) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 7
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4, 5, 6, 7]


def _done() -> Future:
    future: Future = Future()
    future.set_result("commit")
    return future


def test_lora_recipe_saves_a_merged_plain_checkpoint_and_pushes_it(tiny_recipe):
    recipe = with_changes(
        tiny_recipe,
        lora={"r": 4, "lora_alpha": 8},
        training={"max_steps": 4, "push_to_hub": True, "hub_model_id": "someone/occvla-lora"},
    )
    with (
        mock.patch.object(HfApi, "create_repo", return_value=mock.Mock(repo_id="someone/occvla-lora")),
        mock.patch.object(HfApi, "upload_folder", side_effect=lambda **kwargs: _done()) as upload,
    ):
        result = train_joint(recipe)
    assert type(result.model) is OccVLAForPlanning
    files = {path.name for path in result.output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= files and "adapter_config.json" not in files
    loaded = OccVLAForPlanning.from_pretrained(result.output_dir)
    initial = initial_model(recipe)
    q_proj = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(loaded.state_dict()[q_proj], initial.state_dict()[q_proj])  # adapters merged in
    vision = "model.vision_tower.embeddings.patch_embedding.weight"
    torch.testing.assert_close(loaded.state_dict()[vision], initial.state_dict()[vision])  # frozen under LoRA
    assert "rank 4" in (result.output_dir / "README.md").read_text()
    assert upload.call_args.kwargs["repo_id"] == "someone/occvla-lora"
    assert Path(upload.call_args.kwargs["folder_path"]) == result.output_dir


@pytest.fixture
def tiny_paligemma_dir(tmp_path: Path) -> Path:
    """A random PaliGemma checkpoint with the package tokenizer and a 28 px SigLIP image processor."""
    tokenizer = build_tokenizer()
    text = {key: value for key, value in TINY_MODEL_CONFIG["text_config"].items() if key != "model_type"}
    vision = {key: value for key, value in TINY_MODEL_CONFIG["vision_config"].items() if key != "model_type"}
    config = PaliGemmaConfig(
        vision_config={**vision, "model_type": "siglip_vision_model", "projection_dim": text["hidden_size"]},
        text_config={**text, "model_type": "gemma", "vocab_size": len(tokenizer)},
        image_token_id=tokenizer.image_token_id,
        projection_dim=text["hidden_size"],
    )
    torch.manual_seed(0)
    path = tmp_path / "paligemma"
    PaliGemmaForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": IMAGE_SIZE_PX, "width": IMAGE_SIZE_PX}).save_pretrained(path)
    return path


def test_recipe_starts_from_a_vlm_with_a_frozen_vision_tower_and_activation_checkpointing(
    tiny_recipe, tiny_paligemma_dir
):
    base = PaliGemmaForConditionalGeneration.from_pretrained(tiny_paligemma_dir)
    recipe = with_changes(
        tiny_recipe,
        model={
            "from_vlm": str(tiny_paligemma_dir),
            "num_views": 6,
            "config": {"num_occupancy_queries_hw": [5, 5], "occupancy_head_hidden_size": 16},
        },
        freeze_vision_tower=True,
        training={"max_steps": 3, "activation_checkpointing": True},
    )
    result = train_joint(recipe)
    assert result.model.is_activation_checkpointing
    assert result.model.config.occupancy_latent_shape == (4, 25, 25)  # taken from the VAE
    trained = result.model.state_dict()
    for name, value in base.model.vision_tower.state_dict().items():
        torch.testing.assert_close(trained[f"model.vision_tower.{name}"], value, msg=name)  # frozen
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(trained[name], base.state_dict()[name])  # the language model trained
    losses = [entry for entry in result.log_history if "loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(entry["loss"]) for entry in losses)
    assert f"Initialised from `{tiny_paligemma_dir}`" in (result.output_dir / "README.md").read_text()


def test_the_recipe_reads_the_data_source_from_the_dataset_card(training_data_dir, tmp_path):
    assert data_source(DataRecipe(path=str(training_data_dir))) == "sim"  # `data build` of the sim's dataroot
    assert data_source(DataRecipe(path=str(training_data_dir), source="sim")) == "sim"
    with pytest.raises(ValueError, match="records 'sim'"):
        data_source(DataRecipe(path=str(training_data_dir), source="nuscenes"))
    with pytest.raises(ValueError, match="records no source"):
        data_source(DataRecipe(path=str(tmp_path)))
    assert data_source(DataRecipe(path=str(tmp_path), source="nuscenes")) == "nuscenes"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "adamw"}, "unknown keys"),
        ({"training": {"max_steps": 1}}, "output_dir"),
        ({"data": {"path": "x", "source": "carla"}}, "data.source"),
        ({"data": {"path": "x", "tasks": ["occupancy"]}}, "data.tasks"),
        ({"stage": "vae"}, "stage"),
        ({"gradient_norm_steps": -1}, "gradient_norm_steps: expected an int >= 0"),
    ],
)
def test_recipe_rejects_bad_values_before_loading_anything(tiny_recipe, changes, message):
    recipe = copy.deepcopy(tiny_recipe)
    recipe.update(changes)
    with pytest.raises(ValueError, match=message):
        train_joint(recipe)


def test_recipe_rejects_inconsistent_models(tiny_recipe):
    no_vae = with_changes(tiny_recipe)
    no_vae.pop("occupancy_vae")
    with pytest.raises(ValueError, match="occupancy_vae: required"):
        train_joint(no_vae)
    with pytest.raises(ValueError, match="from_pretrained or from_vlm"):
        build_model_and_processor({"from_pretrained": "a", "from_vlm": "b"})
    with pytest.raises(ValueError, match="image_token_id"):
        train_joint(with_changes(tiny_recipe, model={"config": {**TINY_MODEL_CONFIG, "image_token_id": 7}}))
    after_text = {**TINY_MODEL_CONFIG, "trajectory_position": "after_text"}
    model, processor, _ = build_model_and_processor({"config": after_text})
    assert processor.trajectory_position == model.config.trajectory_position == "after_text"
    processor.trajectory_position = "prompt"
    with pytest.raises(ValueError, match="trajectory_position: the processor has prompt, the model config after_text"):
        check_processor_matches_model(processor, model.config)


@pytest.fixture
def tiny_checkpoint_dir(occupancy_vae_dir: Path, tmp_path: Path) -> Path:
    """A saved random tiny OccVLA (5 x 5 queries, heads of width 16) with its processor, trained with an L1
    trajectory loss and half the occupancy weight (values `configs/joint.yaml` sets otherwise)."""
    torch.manual_seed(0)
    config = {**TINY_MODEL_CONFIG, "trajectory_loss_type": "l1", "occupancy_loss_weight": 0.5}
    model, processor, _ = build_model_and_processor({"config": config}, OccupancyVAE.from_pretrained(occupancy_vae_dir))
    path = tmp_path / "tiny_checkpoint"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_the_shipped_joint_recipe_trains_a_small_checkpoint_named_by_overrides(
    tiny_checkpoint_dir, occupancy_vae_dir, training_data_dir, tmp_path, caplog
):
    output_dir = tmp_path / "run"
    overrides = {
        "model.from_pretrained": str(tiny_checkpoint_dir),
        "model.from_vlm": "null",  # the recipe's PaliGemma-3B, removed
        "occupancy_vae": str(occupancy_vae_dir),
        "data.path": str(training_data_dir),
        "data.train_split": "mini_train",
        "data.eval_split": "mini_val",
        "training.output_dir": str(output_dir),
        "training.max_steps": "2",
        "training.bf16": "false",  # CPU
        "training.use_cpu": "true",
        "training.dataloader_num_workers": "0",
    }
    argv = [token for key, value in overrides.items() for token in (f"--{key}", value)]
    with caplog.at_level("WARNING", logger="occvla_hf.training.joint"):
        assert main(["train", "joint", "--config", "joint", *argv]) == 0
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2
    # The recipe's head sizes are for a new model (from_vlm): the checkpoint keeps its own, and the log says so.
    recipe_config = load_recipe("joint")["model"]["config"]
    saved = OccVLAForPlanning.from_pretrained(tiny_checkpoint_dir)
    trained = OccVLAForPlanning.from_pretrained(output_dir)
    for key in ("num_occupancy_queries_hw", "occupancy_head_hidden_size", "trajectory_head_hidden_size"):
        assert getattr(trained.config, key) == getattr(saved.config, key) != tuple_or_value(recipe_config[key])
        assert f"{key}={recipe_config[key]!r}" in caplog.text
    # Its other values apply (the loss), and training started from the checkpoint's weights (the frozen vision tower).
    assert (trained.config.trajectory_loss_type, trained.config.occupancy_loss_weight) == ("smooth_l1", 1.0)
    assert load_recipe("joint")["freeze_vision_tower"] is True
    for name, value in saved.model.vision_tower.state_dict().items():
        torch.testing.assert_close(trained.model.vision_tower.state_dict()[name], value, msg=name)


def tuple_or_value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def test_a_checkpoint_config_takes_the_values_that_keep_its_weights(tiny_checkpoint_dir, caplog):
    saved = OccVLAConfig.from_pretrained(tiny_checkpoint_dir)
    with caplog.at_level("WARNING", logger="occvla_hf.training.joint"):
        config = pretrained_config(
            str(tiny_checkpoint_dir),
            {"text_config": {"hidden_size": 64}, "occupancy_voxel_loss_weight": 0.25, "use_ego_status": False},
        )
    assert "keeps its own text_config={'hidden_size': 32}, use_ego_status=True" in caplog.text
    assert config.text_config.hidden_size == saved.text_config.hidden_size == 32  # would reshape every layer
    assert config.use_ego_status is saved.use_ego_status is True  # the trajectory head reads the ego status
    assert config.occupancy_voxel_loss_weight == 0.25
    assert config.text_config.to_dict() == saved.text_config.to_dict()
    changed = pretrained_config(str(tiny_checkpoint_dir), {"text_config": {"attention_dropout": 0.1}})
    assert changed.text_config.attention_dropout == 0.1 and changed.text_config.hidden_size == 32
    with pytest.raises(StrictDataclassClassValidationError, match="occupancy_loss_weight: expected a finite value"):
        pretrained_config(str(tiny_checkpoint_dir), {"occupancy_loss_weight": -1.0})
    with pytest.raises(ValueError, match="model.num_views: 1, but the checkpoint"):
        build_model_and_processor({"from_pretrained": str(tiny_checkpoint_dir), "num_views": 1})


def test_a_bf16_vlm_checkpoint_trains_in_float32_weights(tiny_paligemma_dir, tmp_path):
    """`training.bf16` is mixed precision: a bf16 checkpoint (PaliGemma-2 ships bf16) still gets float32 weights."""
    path = tmp_path / "paligemma_bf16"
    PaliGemmaForConditionalGeneration.from_pretrained(tiny_paligemma_dir).to(torch.bfloat16).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        if (tiny_paligemma_dir / name).is_file():
            (path / name).write_bytes((tiny_paligemma_dir / name).read_bytes())
    assert PaliGemmaForConditionalGeneration.from_pretrained(path).dtype == torch.bfloat16
    model, _, _ = build_model_and_processor({"from_vlm": str(path), "config": {"occupancy_head_hidden_size": 16}})
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}


def test_the_model_section_chooses_the_attention_of_each_tower(tiny_paligemma_dir):
    section = {"from_vlm": str(tiny_paligemma_dir), "config": {"occupancy_head_hidden_size": 16}}
    split = {"text_config": "flex_attention", "vision_config": "sdpa"}  # Gemma-2 soft-capping in the LM
    model, _, _ = build_model_and_processor({**section, "attn_implementation": split})
    assert model.config.text_config._attn_implementation == "flex_attention"
    assert model.config.vision_config._attn_implementation == "sdpa"
    model, _, _ = build_model_and_processor({**section, "attn_implementation": "eager"})
    assert {model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation} == {"eager"}


@pytest.mark.parametrize("value", ["flash", {"text_config": "flash"}, {"lm": "eager"}, {}, ["eager"]], ids=str)
def test_a_bad_attention_choice_names_the_field(value):
    with pytest.raises(ValueError, match="model.attn_implementation: expected one of"):
        ModelRecipe(attn_implementation=value)
