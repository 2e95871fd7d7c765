"""Bad config values and model inputs raise an error of the expected type that names the field."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from occvla_hf.modeling import OccupancyVAEConfig, OccVLAConfig, OccVLAForPlanning
from tests.conftest import make_batch, tiny_config

NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(projector_type="conv"), "projector_type"),
        (dict(trajectory_loss_type="mse"), "trajectory_loss_type"),
        (dict(occupancy_module="perceiver"), "occupancy_module"),
        (dict(use_ego_status="no"), "use_ego_status"),
        (dict(use_ego_status=1), "use_ego_status"),
        (dict(num_views=2.0), "num_views"),
        (dict(num_views="6"), "num_views"),
        (dict(num_views=True), "num_views"),
        (dict(num_occupancy_queries_hw=4), "num_occupancy_queries_hw"),
        (dict(num_occupancy_queries_hw=(2.0, 2)), "num_occupancy_queries_hw"),
        (dict(num_occupancy_queries_hw=(2, 2, 2)), "num_occupancy_queries_hw"),
        (dict(num_occupancy_queries_hw=[2]), "num_occupancy_queries_hw"),
        (dict(num_occupancy_queries_hw=("2", "2")), "num_occupancy_queries_hw"),
        (dict(trajectory_step_scale_m="2"), "trajectory_step_scale_m"),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else None,
)
def test_config_field_types_are_checked(overrides: dict, field: str) -> None:
    with pytest.raises(StrictDataclassFieldValidationError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        *[
            ({name: value}, name)
            for name in (
                "trajectory_step_scale_m",
                "waypoint_step_s",
                "occupancy_latent_loss_weight",
                "occupancy_voxel_loss_weight",
                "occupancy_loss_weight",
                "trajectory_loss_weight",
            )
            for value in (NAN, INF)
        ],
    ],
)
def test_config_values_are_checked(overrides: dict, field: str) -> None:
    with pytest.raises(StrictDataclassClassValidationError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(projector_type="conv"), "projector_type"),
        (dict(trajectory_loss_type="mse"), "trajectory_loss_type"),
        (dict(use_ego_status="no"), "use_ego_status"),
        (dict(num_views=2.0), "num_views"),
        (dict(num_occupancy_queries_hw=4), "num_occupancy_queries_hw"),
    ],
    ids=["projector", "loss-type", "ego-status", "views-float", "queries-int"],
)
def test_config_json_values_are_checked(tmp_path, change: dict, field: str) -> None:
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(StrictDataclassFieldValidationError, match=field):
        OccVLAConfig.from_pretrained(tmp_path)


def test_config_json_nan_is_rejected(tmp_path) -> None:
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"trajectory_step_scale_m": 2.0', '"trajectory_step_scale_m": NaN'))
    with pytest.raises(StrictDataclassClassValidationError, match="trajectory_step_scale_m"):
        OccVLAConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(kl_weight=NAN), "kl_weight"),
        (dict(kl_weight=INF), "kl_weight"),
        (dict(ce_weight=NAN), "ce_weight"),
        (dict(lovasz_weight=NAN), "lovasz_weight"),
        (dict(commitment_beta=NAN), "commitment_beta"),
        (dict(initializer_range=NAN), "initializer_range"),
        (dict(class_weights=[1.0] * 17 + [NAN]), "class_weights"),
        (dict(class_weights=[1.0] * 17 + [INF]), "class_weights"),
    ],
    ids=["kl-nan", "kl-inf", "ce-nan", "lovasz-nan", "beta-nan", "init-nan", "class-nan", "class-inf"],
)
def test_vae_config_rejects_non_finite_values(overrides: dict, field: str) -> None:
    with pytest.raises(StrictDataclassClassValidationError, match=field):
        OccupancyVAEConfig(**overrides)


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        (lambda b: {**b, "pixel_values": b["pixel_values"].clone().fill_(NAN)}, ValueError, "pixel_values"),
        (
            lambda b: {**b, "pixel_values": b["pixel_values"].clone().index_fill_(0, torch.tensor([1]), INF)},
            ValueError,
            "pixel_values",
        ),
        (lambda b: {**b, "pixel_values": (b["pixel_values"].abs() * 100).to(torch.uint8)}, TypeError, "pixel_values"),
        (lambda b: {**b, "pixel_values": b["pixel_values"].numpy()}, TypeError, "pixel_values"),
        (lambda b: {**b, "token_type_ids": b["token_type_ids"][:, 1:]}, ValueError, "token_type_ids"),
        (lambda b: {**b, "attention_mask": b["attention_mask"][:, 1:]}, ValueError, "attention_mask"),
        (lambda b: {**b, "attention_mask": b["attention_mask"][:1]}, ValueError, "attention_mask"),
        (lambda b: {key: value[:0] for key, value in b.items()}, ValueError, "input_ids"),
    ],
    ids=[
        "nan-pixels",
        "inf-pixels",
        "uint8-pixels",
        "numpy-pixels",
        "short-token-types",
        "short-attention-mask",
        "attention-mask-batch",
        "empty-batch",
    ],
)
def test_bad_model_inputs_name_the_field(tiny_model: OccVLAForPlanning, change, error: type, field: str) -> None:
    with pytest.raises(error, match=field):
        tiny_model(**change(make_batch(tiny_model.config)))


@pytest.mark.parametrize(
    ("strategy", "per_sample"),
    [
        (dict(num_beams=2), 1),
        (dict(num_beams=3, num_return_sequences=2), 2),
        (dict(do_sample=True, top_k=5, num_return_sequences=3), 3),
    ],
    ids=["beams", "beams-returning-two", "sampling-three"],
)
def test_plan_gives_one_trajectory_per_returned_sequence(
    tiny_model: OccVLAForPlanning, strategy: dict, per_sample: int
) -> None:
    batch = make_batch(tiny_model.config, seed=3)
    reference = tiny_model(**batch).trajectory  # (2, 6, 2)
    assert not torch.allclose(reference[0], reference[1])
    torch.manual_seed(0)
    plan = tiny_model.plan(**batch, max_new_tokens=3, **strategy)
    assert plan.sequences.shape[0] == 2 * per_sample
    assert plan.trajectory.shape == (2 * per_sample, 6, 2)
    # Rows follow `sequences`: sample 0's sequences first, each row its own sample's trajectory.
    torch.testing.assert_close(plan.trajectory, reference.repeat_interleave(per_sample, dim=0))
    prompts = batch["input_ids"].repeat_interleave(per_sample, dim=0)
    assert torch.equal(plan.sequences[:, : batch["input_ids"].shape[1]], prompts)
