"""OccVLATrainer: loss combination and logging, gradient accumulation, the occupancy ablation, checkpoints, LoRA,
evaluation metrics, task-grouped batching, the model card and push_to_hub, and the TRL path with our collator."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import EvalPrediction, TrainerCallback, TrainingArguments

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.loss import LOSS_TERMS, loss_item_counts
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.joint import apply_lora
from occvla_hf.training.metrics import planning_l2_metrics
from occvla_hf.training.model_card import ModelCardInfo
from occvla_hf.training.trainer import OccVLATrainer
from occvla_hf.training.weight_schedule import OccupancyWeightSchedule
from tests.conftest import StandInOccupancyVAE, tiny_config
from tests.training import fsdp_worker
from tests.training.conftest import dataset_rows, planning_sample, row_model_and_processor
from tests.training.ddp_worker import one_step

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 40
SCHEDULE = OccupancyWeightSchedule(start_factor=0.5, end_factor=1.0, ramp_steps=10)


@functools.cache
def pretrained_vae_state() -> dict[str, torch.Tensor]:
    """A stand-in VAE fitted to reconstruct the `planning_sample` grids (stage 1 in miniature), so that the voxel
    loss through its decoder falls when the predicted latent approaches the encoded target."""
    torch.manual_seed(0)
    vae = StandInOccupancyVAE()
    grids = torch.stack([planning_sample(tiny_config(), index)["occupancy"] for index in range(16)])
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-2)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(vae.decode(vae.encode(grids)), grids.long()).backward()
        optimizer.step()
    return vae.state_dict()


def tiny_model(seed: int = 0) -> OccVLAForPlanning:
    """`tiny_config` with a voxel loss through the fitted stand-in VAE, so that every loss term is on."""
    vae = StandInOccupancyVAE()
    vae.load_state_dict(pretrained_vae_state())
    torch.manual_seed(seed)
    model = OccVLAForPlanning(tiny_config(occupancy_voxel_loss_weight=0.5))
    model.set_occupancy_vae(vae)
    return model


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def train_logs(trainer: OccVLATrainer) -> list[dict[str, float]]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> OccVLATrainer:
    """40 steps on 16 planning samples with occupancy targets, a warming occupancy weight; saved to output_dir."""
    torch.set_num_threads(1)
    model = tiny_model()
    samples = [planning_sample(model.config, index) for index in range(16)]
    output_dir = tmp_path_factory.mktemp("trained")
    trainer = OccVLATrainer(
        model=model,
        args=training_args(output_dir, max_steps=STEPS),
        train_dataset=samples,
        data_collator=OccVLADataCollator(pad_token_id=0),
        occupancy_weight_schedule=SCHEDULE,
    )
    trainer.train()
    trainer.save_model()
    return trainer


# ----------------------------------------------------------------------------------------- loss and logging


def _mean(entries: list[dict[str, float]], key: str) -> float:
    return float(np.mean([entry[key] for entry in entries]))


def test_training_reduces_the_total_loss_and_every_term(trained):
    logs = train_logs(trained)
    assert len(logs) == STEPS
    for key in ("loss", *LOSS_TERMS):
        first, last = _mean(logs[:5], key), _mean(logs[-5:], key)
        assert last < first, f"{key}: {first:.4f} -> {last:.4f}"


def test_logs_hold_each_term_and_the_total_is_their_weighted_sum(trained):
    config = trained.model.config
    for step, entry in enumerate(train_logs(trained)):
        assert set(LOSS_TERMS) <= set(entry)
        occupancy_weight = config.occupancy_loss_weight * SCHEDULE(step)
        assert entry["occupancy_loss_weight"] == pytest.approx(occupancy_weight)
        expected = (
            entry["lm_loss"]
            + config.trajectory_loss_weight * entry["trajectory_loss"]
            + occupancy_weight
            * (
                config.occupancy_latent_loss_weight * entry["occupancy_latent_loss"]
                + config.occupancy_voxel_loss_weight * entry["occupancy_voxel_loss"]
            )
        )
        assert entry["loss"] == pytest.approx(expected, rel=1e-5)


def test_terms_are_averaged_over_the_steps_between_logs(tmp_path):
    model = tiny_model()
    samples = [planning_sample(model.config, index) for index in range(8)]
    trainer = OccVLATrainer(
        model=model,
        args=training_args(
            tmp_path, max_steps=4, logging_steps=2, learning_rate=0.0, train_sampling_strategy="sequential"
        ),
        train_dataset=samples,
        data_collator=OccVLADataCollator(pad_token_id=0),
    )
    trainer.train()
    logs = train_logs(trainer)
    assert [entry["step"] for entry in logs] == [2, 4]
    # With a zero learning rate the model is fixed: each logged term is the item-weighted mean over both batches.
    collator = OccVLADataCollator(pad_token_id=0)
    batches = [collator(samples[:4]), collator(samples[4:])]
    model.train()
    with torch.no_grad():
        outputs = [model(**batch) for batch in batches]
    counts = [loss_item_counts(batch) for batch in batches]
    for name in LOSS_TERMS:
        expected = sum(float(o[name]) * c[name] for o, c in zip(outputs, counts)) / sum(c[name] for c in counts)
        assert logs[0][name] == pytest.approx(expected, rel=1e-4)


def test_gradient_norms_are_each_terms_gradient_on_the_shared_layers_and_change_nothing(tmp_path):
    """`gradient_norm_steps=2` logs `grad_norm_<term>` at steps 0 and 2 (not 1 and 3), equal to the norm of each
    weighted term's gradient on the vision tower, projector and LM; the loss curve is the one of a run without."""

    def run(gradient_norm_steps: int) -> OccVLATrainer:
        model = tiny_model()
        samples = [planning_sample(model.config, index) for index in range(8)]
        trainer = OccVLATrainer(
            model=model,
            args=training_args(tmp_path, max_steps=4, train_sampling_strategy="sequential"),
            train_dataset=samples,
            data_collator=OccVLADataCollator(pad_token_id=0),
            gradient_norm_steps=gradient_norm_steps,
        )
        trainer.train()
        return trainer

    measured, plain = run(2), run(0)
    logs = train_logs(measured)
    assert [entry["loss"] for entry in logs] == [entry["loss"] for entry in train_logs(plain)]
    norm_keys = {f"grad_norm_{name}" for name in LOSS_TERMS}
    assert [sorted(norm_keys & set(entry)) for entry in logs] == [sorted(norm_keys), [], sorted(norm_keys), []]
    assert [entry.get("grad_norm_step") for entry in logs] == [0, None, 2, None]
    assert not any(key.startswith("grad_norm_") for entry in train_logs(plain) for key in entry)
    # The step-0 norms, recomputed by hand on the first batch of the untrained model.
    model = tiny_model()
    model.train()
    batch = OccVLADataCollator(pad_token_id=0)([planning_sample(model.config, index) for index in range(4)])
    outputs = model(**batch, occupancy_loss_weight=model.config.occupancy_loss_weight)
    shared = [
        p for n, p in model.model.named_parameters() if not n.startswith(("occupancy_queries", "occupancy_transformer"))
    ]
    weights = {
        "lm_loss": 1.0,
        "trajectory_loss": model.config.trajectory_loss_weight,
        "occupancy_latent_loss": model.config.occupancy_loss_weight * model.config.occupancy_latent_loss_weight,
        "occupancy_voxel_loss": model.config.occupancy_loss_weight * model.config.occupancy_voxel_loss_weight,
    }
    for name in LOSS_TERMS:
        grads = torch.autograd.grad(weights[name] * outputs[name], shared, retain_graph=True, allow_unused=True)
        expected = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
        assert logs[0][f"grad_norm_{name}"] == pytest.approx(float(expected), rel=1e-4), name
        assert float(expected) > 0, name


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_gradient_norm_steps_must_be_a_non_negative_int(tmp_path, value):
    with pytest.raises(ValueError, match="gradient_norm_steps"):
        OccVLATrainer(model=tiny_model(), args=training_args(tmp_path), gradient_norm_steps=value)


def assert_same_step(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert max(float(update.abs().max()) for update in reference.values()) > 1e-3
    assert set(other) == set(reference)
    for name, update in reference.items():
        torch.testing.assert_close(other[name], update, rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_accumulation_matches_one_large_batch():
    # Answers of 1, 2, 3 and 6 tokens and partly invalid trajectories: the 2 + 2 split has unequal token counts,
    # so averaging the two micro-batch means (instead of weighting by items) would give another update.
    one_batch, one_batch_log, _ = one_step(per_device_batch=4)
    accumulated, accumulated_log, _ = one_step(per_device_batch=2, gradient_accumulation_steps=2)
    assert_same_step(one_batch, accumulated)
    assert accumulated_log == pytest.approx(one_batch_log, rel=1e-5)


def test_data_parallel_step_matches_one_process(tmp_path):
    output = tmp_path / "ddp.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--module", "tests.training.ddp_worker", str(output)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    one_batch, one_batch_log, _ = one_step(per_device_batch=4)
    assert_same_step(one_batch, load_file(output))
    with safe_open(output, framework="pt") as data_parallel:
        assert json.loads(data_parallel.metadata()["log"]) == pytest.approx(one_batch_log, rel=1e-5)


@pytest.mark.slow
def test_fully_sharded_training_matches_one_process_and_resumes_from_its_sharded_checkpoint(tmp_path):
    # FSDP2 with the settings of configs/accelerate/fsdp.yaml over two CPU processes (see fsdp_worker's docstring).
    sharded = tmp_path / "sharded"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--module", "tests.training.fsdp_worker", str(sharded)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    one_process_logs = fsdp_worker.train(tmp_path / "one_process", per_device_batch=4)
    logs = json.loads((sharded / "logs.json").read_text())
    assert len(logs["run"]) == len(one_process_logs) == 2
    for sharded_log, one_process_log in zip(logs["run"], one_process_logs):
        assert sharded_log == pytest.approx(one_process_log, rel=1e-5)
    # The resumed run starts from other weights: only the sharded checkpoint makes its step 2 the same.
    assert logs["resumed"][-1] == pytest.approx(logs["run"][-1], rel=1e-6)
    for step in (1, 2):  # sharded: each process's part of the weights and momentum, in torch.distributed.checkpoint
        for state in ("pytorch_model_fsdp_0", "optimizer_0"):
            assert (sharded / "run" / f"checkpoint-{step}" / state / ".metadata").is_file()
    initial = fsdp_worker.tiny_model().state_dict()

    def updates(folder: Path) -> dict[str, torch.Tensor]:
        state_dict = OccVLAForPlanning.from_pretrained(folder).state_dict()
        return {name: tensor - initial[name] for name, tensor in state_dict.items()}

    for folder in ("run/checkpoint-1", "run/checkpoint-2", "run", "resumed"):
        reference = "checkpoint-1" if folder.endswith("checkpoint-1") else "."
        assert_same_step(updates(tmp_path / "one_process" / reference), updates(sharded / folder))


def test_trainer_fails_when_fsdp_is_asked_for_but_not_enabled(tmp_path, monkeypatch):
    # `accelerate launch --config_file configs/accelerate/fsdp.yaml` on a machine without GPUs: accelerate starts the
    # processes with this variable but without FSDP (each alone), which would train unsharded without a word.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="fsdp: FSDP was requested but accelerate runs DistributedType.NO"):
        OccVLATrainer(
            model=tiny_model(), args=training_args(tmp_path), data_collator=OccVLADataCollator(pad_token_id=0)
        )


def test_trainer_rejects_a_custom_loss_function(tmp_path):
    with pytest.raises(ValueError, match="compute_loss_func"):
        OccVLATrainer(model=tiny_model(), args=training_args(tmp_path), compute_loss_func=lambda *args, **kw: 0)


# ------------------------------------------------------------------------------------------------- ablation


class RecordGradients(TrainerCallback):
    """Records, before each optimiser step, whether each named parameter has a gradient."""

    def __init__(self, model: torch.nn.Module, names: set[str]) -> None:
        self.model, self.names, self.has_grad = model, names, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs) -> None:
        self.has_grad.extend(p.grad is not None for n, p in self.model.named_parameters() if n in self.names)


def test_ablation_never_builds_occupancy_queries_and_leaves_their_weights_untouched(tmp_path):
    model = tiny_model()
    occupancy_params = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if name.startswith(("occupancy_head.", "model.occupancy_queries."))
    }
    head_calls: list[int] = []
    model.occupancy_head.register_forward_hook(lambda module, args, output: head_calls.append(1))
    lengths: list[int] = []
    model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    samples = [planning_sample(model.config, index) for index in range(8)]  # every sample carries occupancy
    gradients = RecordGradients(model, set(occupancy_params))
    trainer = OccVLATrainer(
        model=model,
        args=training_args(tmp_path, max_steps=3),
        train_dataset=samples,
        data_collator=OccVLADataCollator(pad_token_id=0, occupancy_supervision=False),
        callbacks=[gradients],
    )
    trainer.train()
    assert head_calls == []
    assert max(lengths) == max(sample["input_ids"].shape[0] for sample in samples)  # no occupancy query appended
    assert gradients.has_grad and not any(gradients.has_grad)
    for name, before in occupancy_params.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), before, rtol=0, atol=0)
    for entry in train_logs(trainer):
        assert "occupancy_latent_loss" not in entry and "occupancy_voxel_loss" not in entry
        assert {"lm_loss", "trajectory_loss"} <= set(entry)
    # The control: the same run with occupancy supervision builds the queries and trains their weights.
    supervised = tiny_model()
    supervised_gradients = RecordGradients(supervised, set(occupancy_params))
    OccVLATrainer(
        model=supervised,
        args=training_args(tmp_path, max_steps=1),
        train_dataset=samples,
        data_collator=OccVLADataCollator(pad_token_id=0),
        callbacks=[supervised_gradients],
    ).train()
    assert all(supervised_gradients.has_grad)


# ---------------------------------------------------------------------------------------- checkpoints, LoRA


def test_resume_from_checkpoint_continues_the_same_loss_curve(tmp_path):
    def run(resume: str | None) -> list[dict[str, float]]:
        model = tiny_model(seed=1 if resume else 0)  # a resumed run must not depend on its initial weights
        samples = [planning_sample(model.config, index) for index in range(12)]
        trainer = OccVLATrainer(
            model=model,
            args=training_args(tmp_path, max_steps=8, save_strategy="steps", save_steps=4),
            train_dataset=samples,
            data_collator=OccVLADataCollator(pad_token_id=0),
            occupancy_weight_schedule=SCHEDULE,
        )
        trainer.train(resume_from_checkpoint=resume)
        return train_logs(trainer)

    full = run(None)
    resumed = [entry for entry in run(str(tmp_path / "checkpoint-4")) if entry["step"] > 4]
    assert [entry["step"] for entry in resumed] == [5, 6, 7, 8]
    for before, after in zip(full[4:], resumed):
        for key in ("loss", *LOSS_TERMS, "occupancy_loss_weight"):
            assert after[key] == pytest.approx(before[key], rel=1e-4), key


def test_trained_output_loads_with_from_pretrained(trained):
    model = trained.model.eval()
    loaded = OccVLAForPlanning.from_pretrained(trained.args.output_dir).eval()
    batch = OccVLADataCollator(pad_token_id=0)([planning_sample(model.config, index) for index in range(2)])
    inputs = {
        key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "ego_status")
    }
    with torch.no_grad():
        expected, got = model(**inputs), loaded(**inputs)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.trajectory, expected.trajectory)
    for name, parameter in model.named_parameters():
        if not name.startswith("occupancy_vae."):  # the stand-in VAE is no PreTrainedModel: not in the config
            torch.testing.assert_close(dict(loaded.named_parameters())[name], parameter, msg=name)


def test_lora_trains_adapters_and_merges_into_an_equivalent_plain_model(tmp_path):
    model = tiny_model()
    base_weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    peft_model = apply_lora(model, {"r": 4, "lora_alpha": 8})
    samples = [planning_sample(model.config, index) for index in range(8)]
    trainer = OccVLATrainer(
        model=peft_model,
        args=training_args(tmp_path, max_steps=12),
        train_dataset=samples,
        data_collator=OccVLADataCollator(pad_token_id=0),
    )
    trainer.train()
    logs = train_logs(trainer)
    assert _mean(logs[-3:], "loss") < _mean(logs[:3], "loss")
    trained_names = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name and "language_model" in name for name in trained_names)
    assert not any("vision_tower" in name for name in trained_names)
    batch = OccVLADataCollator(pad_token_id=0)(samples[:2])
    batch.pop("labels")
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch)
    merged = peft_model.merge_and_unload()
    assert type(merged) is OccVLAForPlanning
    merged_weights = dict(merged.named_parameters())
    torch.testing.assert_close(merged_weights["model.vision_tower.embeddings.patch_embedding.weight"],
                               base_weights["model.vision_tower.embeddings.patch_embedding.weight"])  # fmt: skip
    q_proj = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged_weights[q_proj], base_weights[q_proj])
    with torch.no_grad():
        got = merged(**batch)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.trajectory, expected.trajectory, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.occupancy_latent, expected.occupancy_latent, rtol=1e-4, atol=1e-5)


def test_lora_trains_the_cross_attention_occupancy_module_fully():
    model = OccVLAForPlanning(tiny_config(occupancy_module="cross_attention"))
    peft_model = apply_lora(model, {"r": 4, "lora_alpha": 8})
    trained = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    prefix = "base_model.model.model.occupancy_transformer.modules_to_save.default."  # peft's trained copy
    expected = {prefix + name for name, _ in model.model.occupancy_transformer.original_module.named_parameters()}
    assert expected and expected <= trained
    assert not any("occupancy_transformer" in name and "lora_" in name for name in trained)  # no adapters inside


# ---------------------------------------------------------------------------------------------- evaluation


def test_evaluation_reports_l2_and_loss_terms_and_keeps_the_best_checkpoint(tmp_path):
    model = tiny_model()
    samples = [planning_sample(model.config, index) for index in range(8)]
    trainer = OccVLATrainer(
        model=model,
        args=training_args(
            tmp_path,
            max_steps=6,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            metric_for_best_model="stp3_l2_avg_m",
            greater_is_better=False,
            load_best_model_at_end=True,
            per_device_eval_batch_size=4,
        ),
        train_dataset=samples,
        eval_dataset=samples[:6],
        data_collator=OccVLADataCollator(pad_token_id=0),
        compute_metrics=planning_l2_metrics,
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4, 6]
    for entry in evaluations:
        assert {f"eval_{name}" for name in LOSS_TERMS} | {"eval_stp3_l2_avg_m", "eval_uniad_l2_3s_m"} <= set(entry)
    best = min(evaluations, key=lambda entry: entry["eval_stp3_l2_avg_m"])
    assert trainer.state.best_metric == pytest.approx(best["eval_stp3_l2_avg_m"])
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    # The evaluated L2 is that of the predicted trajectories (recomputed by hand for the loaded best model).
    batch = OccVLADataCollator(pad_token_id=0)(samples[:6])
    with torch.no_grad():
        trajectory = trainer.model.eval()(**batch).trajectory.numpy()
    final = trainer.evaluate()
    targets = np.concatenate([batch["trajectory"].numpy(), batch["trajectory_mask"].numpy()[..., None]], -1)
    expected = planning_l2_metrics(EvalPrediction(predictions=trajectory, label_ids=targets))
    assert final["eval_stp3_l2_avg_m"] == pytest.approx(expected["stp3_l2_avg_m"], rel=1e-5)


def test_trainer_batches_a_dataset_with_tasks_by_task(tmp_path):
    class TwoTasks(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.rows = dataset_rows(3, "planning") + dataset_rows(5, "qa")
            self.tasks = ["planning"] * 3 + ["qa"] * 5

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return self.rows[index]

    model, processor = row_model_and_processor()
    trainer = OccVLATrainer(
        model=model,
        args=training_args(tmp_path, per_device_train_batch_size=2),
        train_dataset=TwoTasks(),
        processing_class=processor,
    )
    assert isinstance(trainer.data_collator, OccVLADataCollator)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 2 + 3
    assert sorted("trajectory" in batch for batch in batches) == [False] * 3 + [True] * 2


def test_uint8_images_normalised_on_the_device_train_like_normalised_ones(tmp_path):
    """A collator with `normalize_images=False` sends resized uint8 images and the trainer normalises them
    (`_prepare_inputs`): the loss curve is the one of normalised batches."""

    def run(normalize_images: bool) -> list[float]:
        model, processor = row_model_and_processor()
        trainer = OccVLATrainer(
            model=model,
            args=training_args(
                tmp_path, max_steps=3, per_device_train_batch_size=2, train_sampling_strategy="sequential"
            ),
            train_dataset=dataset_rows(6, "planning"),
            processing_class=processor,
            data_collator=OccVLADataCollator(processor, normalize_images=normalize_images),
        )
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch["pixel_values"].dtype == (torch.float32 if normalize_images else torch.uint8)
        trainer.train()
        return [entry["loss"] for entry in train_logs(trainer)]

    on_device, in_loader = run(False), run(True)
    assert len(on_device) == 3
    assert on_device == pytest.approx(in_loader, rel=1e-5)


def test_uint8_images_need_the_processor_to_be_normalised(tmp_path):
    model, processor = row_model_and_processor()
    trainer = OccVLATrainer(model=model, args=training_args(tmp_path))
    batch = OccVLADataCollator(processor, normalize_images=False)(dataset_rows(2, "planning"))
    with pytest.raises(ValueError, match="pixel_values: uint8 images need the trainer's processing_class"):
        trainer._prepare_inputs(batch)


# ------------------------------------------------------------------------------------- model card and Hub


def _done() -> Future:
    future: Future = Future()
    future.set_result("commit")
    return future


def test_push_to_hub_uploads_checkpoints_and_the_output_folder_with_the_model_card(tmp_path):
    model = tiny_model()
    samples = [planning_sample(model.config, index) for index in range(4)]
    with (
        mock.patch.object(HfApi, "create_repo", return_value=mock.Mock(repo_id="someone/occvla-tiny")) as create,
        mock.patch.object(HfApi, "upload_folder", side_effect=lambda **kwargs: _done()) as upload,
    ):
        trainer = OccVLATrainer(
            model=model,
            args=training_args(
                tmp_path,
                max_steps=2,
                save_strategy="steps",
                save_steps=2,
                push_to_hub=True,
                hub_model_id="someone/occvla-tiny",
                hub_strategy="checkpoint",
            ),
            train_dataset=samples,
            data_collator=OccVLADataCollator(pad_token_id=0),
            model_card_info=ModelCardInfo(training_data="nuscenes", datasets=["someone/nuscenes-occvla"]),
        )
        trainer.train()
        trainer.push_to_hub(commit_message="tiny run")
    create.assert_called_once()
    assert create.call_args.args[0] == "someone/occvla-tiny"
    paths_in_repo = [call.kwargs.get("path_in_repo") for call in upload.call_args_list]
    assert "last-checkpoint" in paths_in_repo  # the checkpoint push during training
    final = upload.call_args_list[-1].kwargs
    assert final["repo_id"] == "someone/occvla-tiny" and final["commit_message"] == "tiny run"
    folder = Path(final["folder_path"])
    assert {"config.json", "model.safetensors", "README.md"} <= {path.name for path in folder.iterdir()}
    card = (folder / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "someone/nuscenes-occvla" in card
    assert "Not for driving a vehicle" in card and "liu2025occvla" in card and "nuScenes terms of use" in card
    last = train_logs(trainer)[-1]
    assert f"| lm_loss | {last['lm_loss']:.4f} |" in card
    assert 'OccVLAForPlanning.from_pretrained("someone/occvla-tiny")' in card


# ------------------------------------------------------------------------------------------------------ TRL


def test_trl_sft_trainer_trains_qa_rows_with_our_collator_on_the_model_lm_loss(tmp_path, monkeypatch):
    from datasets import Dataset
    from huggingface_hub import constants
    from trl import SFTConfig, SFTTrainer

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    model, processor = row_model_and_processor()
    rows = dataset_rows(8, "qa")
    for index, row in enumerate(rows):
        row["answer"] = "yes" if index % 2 else "no"
        row["images"] = [PIL.Image.fromarray(image) for image in row["images"]]  # an Image feature, as in the Hub data
    dataset = Dataset.from_list(rows)
    collator = OccVLADataCollator(processor)
    batch = collator([dataset[0], dataset[1]])
    with torch.no_grad():
        lm_loss = model(**batch).lm_loss
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        remove_unused_columns=False,  # the collator reads `images`, `question`, `answer`
        bf16=False,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, data_collator=collator
    )
    with torch.no_grad():
        assert float(trainer.compute_loss(model, dict(batch))) == pytest.approx(float(lm_loss), rel=1e-5)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert _mean(logs[-3:], "loss") < _mean(logs[:3], "loss")
