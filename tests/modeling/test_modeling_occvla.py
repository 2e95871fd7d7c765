"""OccVLAForPlanning: invariant 1 (zero inference overhead), gradients, generation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError

from occvla_hf.modeling import OccVLAForPlanning
from tests.conftest import TINY_GRID, StandInOccupancyVAE, make_batch, tiny_config


def occupancy_targets(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 18, (batch, *TINY_GRID), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def right_pad_second_sample(batch: dict, pad: int) -> dict:
    """Replace the last `pad` tokens of sample 1 by padding (0) after moving its <traj> token before them."""
    input_ids, attention_mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    traj = input_ids[1, -1].item()
    input_ids[1, -pad - 1] = traj
    input_ids[1, -pad:] = 0
    attention_mask[1, -pad:] = 0
    return {**batch, "input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("num_views", [1, 6])
@pytest.mark.parametrize("prefix", [True, False], ids=["bidirectional-prefix", "causal"])
def test_occupancy_queries_change_no_text_logit_and_no_trajectory(num_views: int, prefix: bool) -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(num_views=num_views))
    model.set_occupancy_vae(StandInOccupancyVAE())
    model.eval()
    batch = right_pad_second_sample(make_batch(model.config), pad=2)
    if not prefix:
        batch.pop("token_type_ids")
    without = model(**batch)
    with_queries = model(**batch, occupancy=occupancy_targets(2))
    assert with_queries.occupancy_latent is not None and without.occupancy_latent is None
    assert with_queries.logits.shape == without.logits.shape
    torch.testing.assert_close(with_queries.logits, without.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_queries.trajectory, without.trajectory, rtol=0, atol=1e-6)


def test_occupancy_queries_see_images_not_text(tiny_model: OccVLAForPlanning) -> None:
    # Causal layout: with PaliGemma's bidirectional prefix the image states themselves depend on the prompt.
    batch = make_batch(tiny_model.config)
    batch.pop("token_type_ids")
    reference = tiny_model(**batch, return_occupancy=True).occupancy_latent
    changed_text = batch["input_ids"].clone()
    changed_text[:, -3] = (changed_text[:, -3] + 1) % 60 + 1
    same = tiny_model(**{**batch, "input_ids": changed_text}, return_occupancy=True).occupancy_latent
    torch.testing.assert_close(same, reference)
    other_images = tiny_model(
        **{**batch, "pixel_values": batch["pixel_values"].flip(-1)}, return_occupancy=True
    ).occupancy_latent
    assert not torch.allclose(other_images, reference)


def test_generate_and_plan_never_build_occupancy_queries(tiny_model: OccVLAForPlanning) -> None:
    calls: list[int] = []
    tiny_model.occupancy_head.register_forward_hook(lambda module, args, output: calls.append(1))
    lengths: list[int] = []
    tiny_model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    batch = make_batch(tiny_model.config)
    tiny_model.generate(**batch, occupancy=occupancy_targets(2), max_new_tokens=3, do_sample=False)
    plan = tiny_model.plan(**batch, max_new_tokens=3)
    assert calls == []
    assert lengths[0] == batch["input_ids"].shape[1]  # prefill: image + text tokens only
    assert plan.trajectory.shape == (2, 6, 2)
    torch.testing.assert_close(plan.trajectory, tiny_model(**batch).trajectory)


def test_generate_matches_a_manual_greedy_loop(tiny_model: OccVLAForPlanning) -> None:
    batch = make_batch(tiny_model.config, planning=False)
    generated = tiny_model.generate(**batch, max_new_tokens=4, do_sample=False, suppress_tokens=None)
    input_ids, token_type_ids = batch["input_ids"], batch["token_type_ids"]
    for _ in range(4):
        logits = tiny_model(
            input_ids=input_ids,
            pixel_values=batch["pixel_values"],
            attention_mask=torch.ones_like(input_ids),
            token_type_ids=token_type_ids,
        ).logits
        next_token = logits[:, -1].argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, next_token], dim=1)
        token_type_ids = torch.cat([token_type_ids, torch.ones_like(next_token)], dim=1)
    assert torch.equal(generated, input_ids)


def test_backward_reaches_occupancy_parts_only_with_targets(tiny_model: OccVLAForPlanning) -> None:
    tiny_model.train()
    batch = make_batch(tiny_model.config)
    labels = batch["input_ids"].clone()
    labels[:, :-2] = -100
    trajectory = torch.randn(2, 6, 2)
    tiny_model(**batch, labels=labels, trajectory=trajectory).loss.backward()
    assert tiny_model.model.occupancy_queries.weight.grad is None
    assert all(p.grad is None for p in tiny_model.occupancy_head.parameters())
    assert tiny_model.trajectory_head.mlp[0].weight.grad is not None

    tiny_model.zero_grad(set_to_none=True)
    out = tiny_model(**batch, labels=labels, trajectory=trajectory, occupancy=occupancy_targets(2))
    assert out.occupancy_latent_loss is not None
    out.loss.backward()
    assert tiny_model.model.occupancy_queries.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.occupancy_head.parameters())
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.occupancy_vae.parameters())
    assert not tiny_model.occupancy_vae.training and tiny_model.training


def test_loss_is_the_weighted_sum_of_its_terms() -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(
        tiny_config(trajectory_loss_weight=0.5, occupancy_loss_weight=2.0, occupancy_voxel_loss_weight=0.25)
    )
    model.set_occupancy_vae(StandInOccupancyVAE())
    batch = make_batch(model.config)
    labels = batch["input_ids"].clone()
    labels[:, :-2] = -100
    occupancy = occupancy_targets(2)
    mask = torch.rand(occupancy.shape) > 0.5
    out = model(**batch, labels=labels, trajectory=torch.randn(2, 6, 2), occupancy=occupancy, occupancy_mask=mask)
    occupancy_total = out.occupancy_latent_loss + 0.25 * out.occupancy_voxel_loss
    expected = out.lm_loss + 0.5 * out.trajectory_loss + 2.0 * occupancy_total
    torch.testing.assert_close(out.loss, expected)
    logits = model.occupancy_vae.decode(out.occupancy_latent)
    per_voxel = F.cross_entropy(logits, occupancy.long(), reduction="none")
    torch.testing.assert_close(out.occupancy_voxel_loss, per_voxel[mask].mean())


def test_trajectory_loss_ignores_masked_waypoints(tiny_model: OccVLAForPlanning) -> None:
    batch = make_batch(tiny_model.config)
    predicted = tiny_model(**batch).trajectory
    target = predicted.detach().clone()
    target[:, 4:] = float("nan")  # invalid steps may hold anything
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 4:] = False
    out = tiny_model(**batch, trajectory=target, trajectory_mask=mask)
    assert out.trajectory_loss.item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = OccVLAForPlanning(tiny_config())
        model.set_occupancy_vae(StandInOccupancyVAE())
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()
        batch = make_batch(model.config)
        model(**batch, trajectory=torch.zeros(2, 6, 2), occupancy=occupancy_targets(2)).loss.backward()
        grads.append(model.model.language_model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_forward_is_finite() -> None:
    model = OccVLAForPlanning(tiny_config()).to(torch.bfloat16).eval()
    out = model(**make_batch(model.config))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.trajectory.float()).all()


def test_constant_velocity_init_makes_the_head_that_planner() -> None:
    model = OccVLAForPlanning(tiny_config()).eval()
    mean = [5.0, 0.1, 0.2, -0.1, 0.0, 0.0]
    std = [2.0, 0.5, 1.0, 0.7, 0.1, 1.0]
    model.trajectory_head.init_constant_velocity(mean, std)
    batch = make_batch(model.config)
    raw = batch["ego_status"] * torch.tensor(std) + torch.tensor(mean)  # (batch, F) m/s, ...
    times_s = 0.5 * torch.arange(1, 7)
    expected = torch.stack([raw[:, 0:1] * times_s, raw[:, 1:2] * times_s], dim=-1)  # (batch, 6, 2)
    torch.testing.assert_close(model(**batch).trajectory, expected)


def test_constant_velocity_init_without_ego_status_extrapolates_the_last_past_step() -> None:
    """The history's last position is 0.5 s back, so the velocity is minus it per step: waypoint k is -k times it."""
    model = OccVLAForPlanning(tiny_config(use_ego_status=False, ego_history_steps=2)).eval()
    mean, std = [-9.0, 0.2, -4.5, 0.1], [3.0, 0.4, 1.5, 0.2]  # (step, axis) flattened, oldest first
    model.trajectory_head.init_constant_velocity(ego_history_mean=mean, ego_history_std=std)
    history = torch.randn(2, 2, 2)  # (batch, steps, 2) normalised
    last = history[:, -1] * torch.tensor(std[2:]) + torch.tensor(mean[2:])  # (batch, 2) metres at -0.5 s
    expected = -torch.arange(1.0, 7.0)[None, :, None] * last[:, None, :]  # (batch, 6, 2)
    torch.testing.assert_close(model(**make_batch(model.config), ego_history=history).trajectory, expected)


def test_constant_velocity_init_with_both_inputs_uses_the_ego_status() -> None:
    model = OccVLAForPlanning(tiny_config(ego_history_steps=4)).eval()
    model.trajectory_head.init_constant_velocity([0.0] * 6, [1.0] * 6, [0.0] * 8, [1.0] * 8)
    batch = make_batch(model.config)
    plans = [model(**batch, ego_history=torch.randn(2, 4, 2)).trajectory for _ in range(2)]
    torch.testing.assert_close(plans[0], plans[1])  # the history's path starts at zero
    expected = batch["ego_status"][:, None, :2] * 0.5 * torch.arange(1.0, 7.0)[None, :, None]
    torch.testing.assert_close(plans[0], expected)


def test_constant_velocity_init_needs_a_kinematic_input_and_its_statistics() -> None:
    model = OccVLAForPlanning(tiny_config(use_ego_status=False))
    with pytest.raises(ValueError, match=r"use_ego_status, ego_history_steps: .* \(both are off\)"):
        model.trajectory_head.init_constant_velocity([0.0] * 6, [1.0] * 6)
    with pytest.raises(ValueError, match=r"ego_status_mean/ego_status_std: expected 6 values each, got \[5, 6\]"):
        OccVLAForPlanning(tiny_config()).trajectory_head.init_constant_velocity([0.0] * 5, [1.0] * 6)
    history_only = OccVLAForPlanning(tiny_config(use_ego_status=False, ego_history_steps=2)).trajectory_head
    with pytest.raises(ValueError, match=r"ego_history_mean/ego_history_std: expected 4 values each, got \[None"):
        history_only.init_constant_velocity([0.0] * 6, [1.0] * 6)


def test_trajectory_head_stays_float32_in_a_bf16_checkpoint_load(tmp_path) -> None:
    OccVLAForPlanning(tiny_config()).save_pretrained(tmp_path)
    model = OccVLAForPlanning.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.trajectory_head.parameters()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(**make_batch(model.config)).trajectory.dtype == torch.float32


def test_ego_status_switch_changes_the_head_input() -> None:
    model = OccVLAForPlanning(tiny_config(use_ego_status=False)).eval()
    batch = make_batch(model.config)
    batch.pop("ego_status")
    assert model(**batch).trajectory.shape == (2, 6, 2)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: {**b, "pixel_values": b["pixel_values"][:, :1]}, "pixel_values"),
        (lambda b: {**b, "pixel_values": b["pixel_values"][..., :14, :14]}, "pixel_values"),
        (lambda b: {**b, "pixel_values": b["pixel_values"][:1]}, "pixel_values"),
        (lambda b: {**b, "ego_status": torch.full_like(b["ego_status"], float("nan"))}, "ego_status"),
        (lambda b: {**b, "ego_status": b["ego_status"][:, :3]}, "ego_status"),
        (
            lambda b: {
                **b,
                "input_ids": b["input_ids"][:, 1:],
                "attention_mask": b["attention_mask"][:, 1:],
                "token_type_ids": b["token_type_ids"][:, 1:],
            },
            "input_ids",
        ),
    ],
    ids=["views", "image-size", "batch", "nan-ego", "ego-dim", "image-tokens"],
)
def test_bad_inputs_name_the_field(tiny_model: OccVLAForPlanning, change, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_model(**change(make_batch(tiny_model.config)))


def test_occupancy_targets_need_a_vae() -> None:
    model = OccVLAForPlanning(tiny_config())
    with pytest.raises(ValueError, match="set_occupancy_vae"):
        model(**make_batch(model.config), occupancy=occupancy_targets(2))


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(Exception, match="num_occupancy_queries_hw"):
        tiny_config(num_occupancy_queries_hw=(3, 3))
    with pytest.raises(Exception, match="traj_token_id"):
        tiny_config(traj_token_id=500)


def test_training_lm_loss_skips_full_logits_but_equals_the_eval_loss(tiny_model: OccVLAForPlanning) -> None:
    batch = make_batch(tiny_model.config)
    labels = batch["input_ids"].clone()
    labels[:, :-3] = -100
    eval_out = tiny_model.eval()(**batch, labels=labels)
    expected = F.cross_entropy(eval_out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(eval_out.lm_loss, expected)
    train_out = tiny_model.train()(**batch, labels=labels)
    assert train_out.logits is None
    torch.testing.assert_close(train_out.lm_loss, expected)


def test_static_cache_generation_matches_the_dynamic_cache(tiny_model: OccVLAForPlanning) -> None:
    batch = make_batch(tiny_model.config, planning=False)
    dynamic = tiny_model.generate(**batch, max_new_tokens=5, do_sample=False)
    static = tiny_model.generate(**batch, max_new_tokens=5, do_sample=False, cache_implementation="static")
    assert torch.equal(dynamic, static)


@pytest.mark.parametrize("strategy", [dict(num_beams=3), dict(do_sample=True, top_k=5)], ids=["beam", "sample"])
def test_generate_supports_beam_search_and_sampling(tiny_model: OccVLAForPlanning, strategy: dict) -> None:
    batch = make_batch(tiny_model.config, planning=False)
    torch.manual_seed(0)
    generated = tiny_model.generate(**batch, max_new_tokens=4, min_new_tokens=4, **strategy)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 4)
    assert torch.equal(generated[:, : batch["input_ids"].shape[1]], batch["input_ids"])


# ------------------------------------------------------------------------------------- trajectory after the text


def after_text_model() -> OccVLAForPlanning:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(trajectory_position="after_text"))
    model.set_occupancy_vae(StandInOccupancyVAE())
    return model.eval()


def left_padded_prompts(config, pad: int = 2) -> dict:
    """Two planning prompts without <traj> (images, then text), the second shorter and left padded by `pad`."""
    batch = make_batch(config, planning=False)
    input_ids, attention_mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    input_ids[1] = torch.cat([torch.zeros(pad, dtype=input_ids.dtype), input_ids[1, :-pad]])
    attention_mask[1, :pad] = 0
    return {**batch, "input_ids": input_ids, "attention_mask": attention_mask}


def teacher_forced_trajectory(model: OccVLAForPlanning, batch: dict, generated: torch.Tensor, eos: int) -> torch.Tensor:
    """The trajectory of one forward over `[prompt | text | <traj>]` per sample (the training layout)."""
    rows = []
    for i in range(generated.shape[0]):
        prompt = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        text = generated[i]
        text = text[: int((text == eos).int().argmax())] if (text == eos).any() else text
        input_ids = torch.cat([prompt, text, torch.tensor([model.config.traj_token_id])])[None]
        token_type_ids = torch.zeros_like(input_ids)
        token_type_ids[:, len(prompt) :] = 1
        rows.append(
            model(
                input_ids=input_ids,
                token_type_ids=token_type_ids,
                pixel_values=batch["pixel_values"][i : i + 1],
                ego_status=batch["ego_status"][i : i + 1],
            ).trajectory
        )
    return torch.cat(rows)


def test_after_text_plan_equals_one_teacher_forced_forward_over_prompt_text_and_traj() -> None:
    model = after_text_model()
    batch = left_padded_prompts(model.config)
    sampling = {"do_sample": True, "temperature": 5.0, "max_new_tokens": 6}  # a random model repeats its argmax
    torch.manual_seed(1)
    first = model.plan(**batch, min_new_tokens=6, **sampling)
    generated = first.sequences[:, batch["input_ids"].shape[1] :]
    # Sample 0 stops after k >= 1 text tokens (its first token not seen before); sample 1 where it meets that token.
    k = next(k for k in range(1, 6) if generated[0, k] not in generated[0, :k])
    eos = int(generated[0, k])
    lengths: list[int] = []
    model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    torch.manual_seed(1)
    plan = model.plan(**batch, eos_token_id=eos, **sampling)
    generated = plan.sequences[:, batch["input_ids"].shape[1] :]
    assert generated[0, k] == eos and not (generated[0, :k] == eos).any()
    assert lengths[0] == batch["input_ids"].shape[1] and max(lengths[1:]) <= 2  # one prefill, then cached steps
    assert len(lengths) == generated.shape[1] + 1  # the decoding steps and the one <traj> step
    expected = teacher_forced_trajectory(model, batch, generated, eos)
    torch.testing.assert_close(plan.trajectory, expected, rtol=0, atol=1e-6)
    # The trajectory conditions on the text: the first plan (6 tokens for both samples) differs for sample 0.
    assert not torch.allclose(first.trajectory[0], plan.trajectory[0])
    full_text = teacher_forced_trajectory(model, batch, first.sequences[:, -6:], -1)
    torch.testing.assert_close(first.trajectory, full_text, rtol=0, atol=1e-6)


def test_after_text_plan_rejects_a_traj_prompt_and_beams() -> None:
    model = after_text_model()
    with pytest.raises(ValueError, match="the prompt has no <traj> token"):
        model.plan(**make_batch(model.config), max_new_tokens=2)
    with pytest.raises(ValueError, match="num_beams"):
        model.plan(**make_batch(model.config, planning=False), max_new_tokens=2, num_beams=2)


@pytest.mark.parametrize("trajectory_position", ["prompt", "after_text"])
def test_occupancy_queries_change_nothing_in_either_trajectory_layout(trajectory_position: str) -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(trajectory_position=trajectory_position))
    model.set_occupancy_vae(StandInOccupancyVAE())
    model.eval()
    batch = make_batch(model.config)  # <traj> last: the end of the prompt, or after a 3-token answer
    if trajectory_position == "after_text":
        batch["token_type_ids"][:, -4:] = 1
    without = model(**batch)
    with_queries = model(**batch, occupancy=occupancy_targets(2))
    torch.testing.assert_close(with_queries.logits, without.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(with_queries.trajectory, without.trajectory, rtol=0, atol=1e-6)
    calls: list[int] = []
    model.occupancy_head.register_forward_hook(lambda module, args, output: calls.append(1))
    plan_batch = batch if trajectory_position == "prompt" else make_batch(model.config, planning=False)
    model.plan(**plan_batch, max_new_tokens=3)
    assert calls == []


# ------------------------------------------------------------------------------------------------- ego history


@pytest.mark.parametrize("trajectory_position", ["prompt", "after_text"])
def test_the_trajectory_head_reads_the_ego_history(trajectory_position: str) -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(ego_history_steps=4, trajectory_position=trajectory_position)).eval()
    hidden, status = model.config.text_config.hidden_size, model.config.ego_status_dim
    assert model.trajectory_head.mlp[0].in_features == hidden + status + 4 * 2
    batch = make_batch(model.config, planning=trajectory_position == "prompt")
    history = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(1))
    plan = model.plan(**batch, ego_history=history, max_new_tokens=2)
    other = model.plan(**batch, ego_history=history.flip(1), max_new_tokens=2)
    assert plan.trajectory.shape == (2, 6, 2) and not torch.allclose(plan.trajectory, other.trajectory)
    with pytest.raises(ValueError, match=r"ego_history: required, \(2, 4, 2\), because config.ego_history_steps is 4"):
        model.plan(**batch, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"ego_history: expected \(2, 4, 2\)"):
        model.plan(**batch, ego_history=history[:, 1:], max_new_tokens=2)


def test_ego_history_beyond_the_rows_is_rejected() -> None:
    with pytest.raises(StrictDataclassClassValidationError, match=r"ego_history_steps: expected 0..4 \(the rows"):
        tiny_config(ego_history_steps=5)
