"""The cross-attention occupancy module (`occupancy_module="cross_attention"`): invariant 1 (outputs bit-identical
with and without it, generate/plan never run it), what it reads, gradients, round trips, the inference export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.occupancy_transformer import hidden_states_request
from tests.conftest import StandInOccupancyVAE, make_batch, tiny_config, tiny_occupancy_vae
from tests.modeling.test_modeling_occvla import occupancy_targets, right_pad_second_sample


def cross_attention_model(source_layer: int = -1, **overrides) -> OccVLAForPlanning:
    torch.manual_seed(0)
    config = tiny_config(occupancy_module="cross_attention", occupancy_source_layer=source_layer, **overrides)
    model = OccVLAForPlanning(config)
    model.set_occupancy_vae(StandInOccupancyVAE())
    return model.eval()


def supervised_targets(batch: dict) -> dict:
    labels = batch["input_ids"].clone()
    labels[:, :-2] = -100
    return {"labels": labels, "trajectory": torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(1))}


@pytest.mark.parametrize("source_layer", [0, 1, -1], ids=["projector", "layer-1", "last-layer"])
@pytest.mark.parametrize("prefix", [True, False], ids=["bidirectional-prefix", "causal"])
def test_cross_attention_module_leaves_text_logits_and_trajectory_bit_identical(source_layer: int, prefix: bool):
    model = cross_attention_model(source_layer)
    batch = right_pad_second_sample(make_batch(model.config), pad=2)
    if not prefix:
        batch.pop("token_type_ids")
    calls: list[int] = []
    model.model.occupancy_transformer.register_forward_hook(lambda module, args, output: calls.append(1))
    without = model(**batch)
    assert calls == [] and without.occupancy_latent is None
    with_module = model(**batch, occupancy=occupancy_targets(2))
    assert calls == [1] and with_module.occupancy_latent.shape == (2, 4, 8, 8)
    assert with_module.logits.dtype == torch.float32
    assert torch.equal(with_module.logits, without.logits)
    assert torch.equal(with_module.trajectory, without.trajectory)
    assert with_module.hidden_states is None  # the LM's hidden states were read internally, not asked for


def test_generate_and_plan_never_run_the_occupancy_transformer() -> None:
    model = cross_attention_model()
    calls: list[str] = []
    model.model.occupancy_transformer.register_forward_hook(lambda module, args, output: calls.append("transformer"))
    model.occupancy_head.register_forward_hook(lambda module, args, output: calls.append("head"))
    batch = make_batch(model.config)
    model.generate(**batch, occupancy=occupancy_targets(2), return_occupancy=True, max_new_tokens=3, do_sample=False)
    plan = model.plan(**batch, max_new_tokens=3)
    assert calls == []
    assert torch.equal(plan.trajectory, model(**batch).trajectory)


def test_source_layer_zero_reads_the_projector_output() -> None:
    model = cross_attention_model(source_layer=0)
    projected: list[torch.Tensor] = []
    read: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.model.multi_modal_projector.register_forward_hook(lambda module, args, output: projected.append(output))
    model.model.occupancy_transformer.register_forward_pre_hook(lambda module, args: read.append(args))
    batch = make_batch(model.config)
    model(**batch, return_occupancy=True)
    states, is_image = read[0]
    assert torch.equal(states[is_image].view(2, -1, 32), projected[0].reshape(2, -1, 32))


def test_occupancy_transformer_sees_images_not_text() -> None:
    # Causal layout: with PaliGemma's bidirectional prefix the image states themselves depend on the prompt.
    model = cross_attention_model(source_layer=-1)
    batch = make_batch(model.config)
    batch.pop("token_type_ids")
    reference = model(**batch, return_occupancy=True).occupancy_latent
    changed_text = batch["input_ids"].clone()
    changed_text[:, -3] = (changed_text[:, -3] + 1) % 60 + 1
    assert torch.equal(model(**{**batch, "input_ids": changed_text}, return_occupancy=True).occupancy_latent, reference)
    flipped = {**batch, "pixel_values": batch["pixel_values"].flip(-1)}
    assert not torch.allclose(model(**flipped, return_occupancy=True).occupancy_latent, reference)


@pytest.mark.parametrize(("source_layer", "lm_gets_gradient"), [(0, False), (-1, True)], ids=["projector", "last"])
def test_occupancy_gradients_reach_the_module_and_the_layers_below_its_source(source_layer, lm_gets_gradient):
    model = cross_attention_model(source_layer).train()
    batch = make_batch(model.config)
    model(**batch, **supervised_targets(batch)).loss.backward()
    assert all(p.grad is None for p in model.model.occupancy_transformer.parameters())
    assert all(p.grad is None for p in model.occupancy_head.parameters())

    model.zero_grad(set_to_none=True)
    out = model(**batch, occupancy=occupancy_targets(2))  # the occupancy term alone
    assert out.occupancy_latent_loss is not None and out.lm_loss is None
    out.loss.backward()
    for name, parameter in model.model.occupancy_transformer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.model.multi_modal_projector.linear.weight.grad.abs().sum() > 0
    lm_weight = model.model.language_model.layers[0].mlp.up_proj.weight
    assert (lm_weight.grad is not None and lm_weight.grad.abs().sum() > 0) == lm_gets_gradient
    assert all(not p.requires_grad and p.grad is None for p in model.occupancy_vae.parameters())


def test_gradient_checkpointing_gives_the_same_gradients_with_the_module() -> None:
    grads = []
    for checkpointing in (False, True):
        model = cross_attention_model(source_layer=1).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        batch = make_batch(model.config)
        model(**batch, trajectory=torch.zeros(2, 6, 2), occupancy=occupancy_targets(2)).loss.backward()
        grads.append(
            [model.model.language_model.layers[0].mlp.up_proj.weight.grad.clone()]
            + [p.grad.clone() for p in model.model.occupancy_transformer.parameters()]
        )
    for without, with_checkpointing in zip(*grads):
        torch.testing.assert_close(with_checkpointing, without)


def test_caller_hidden_states_are_kept_beside_the_source_layer() -> None:
    model = cross_attention_model(source_layer=1)
    batch = make_batch(model.config)
    everything = model(**batch, return_occupancy=True, output_hidden_states=True)
    assert len(everything.hidden_states) == 3 and all(state is not None for state in everything.hidden_states)
    plain = model(**batch, output_hidden_states=True)
    for ours, theirs in zip(everything.hidden_states, plain.hidden_states):
        assert torch.equal(ours, theirs)
    assert hidden_states_request(None, 1) == [1] and hidden_states_request(False, -1) == [-1]
    assert hidden_states_request(True, 1) is True and hidden_states_request(0, 1) == [0, 1]


def test_save_and_load_round_trip_the_module(tmp_path: Path) -> None:
    model = cross_attention_model(source_layer=1, occupancy_transformer_layers=3, occupancy_transformer_heads=2)
    model.set_occupancy_vae(tiny_occupancy_vae())  # saved with the model, so the decoded logits round-trip too
    batch = make_batch(model.config)
    expected = model(**batch, return_occupancy=True)
    model.save_pretrained(tmp_path)
    loaded = OccVLAForPlanning.from_pretrained(tmp_path).eval()
    assert loaded.config.occupancy_module == "cross_attention" and loaded.config.occupancy_source_layer == 1
    assert len(loaded.model.occupancy_transformer.blocks) == 3 and loaded.model.occupancy_queries is None
    out = loaded(**batch, return_occupancy=True)
    for name in ("logits", "trajectory", "occupancy_latent", "occupancy_logits"):
        assert torch.equal(getattr(out, name), getattr(expected, name)), name


def test_inference_export_drops_the_module(tmp_path: Path) -> None:
    model = cross_attention_model()
    batch = make_batch(model.config)
    expected = model(**batch)
    assert any(key.startswith("model.occupancy_transformer.") for key in model.state_dict())
    model.without_occupancy_modules()
    assert not any("occupancy" in key for key in model.state_dict())
    model.save_pretrained(tmp_path)
    loaded = OccVLAForPlanning.from_pretrained(tmp_path).eval()
    assert loaded.model.occupancy_transformer is None and loaded.occupancy_head is None
    out = loaded(**batch)
    assert torch.equal(out.logits, expected.logits) and torch.equal(out.trajectory, expected.trajectory)
    with pytest.raises(ValueError, match="without_occupancy_modules"):
        loaded(**batch, return_occupancy=True)


def test_the_module_needs_images() -> None:
    model = cross_attention_model()
    batch = make_batch(model.config)
    batch.pop("pixel_values")
    with pytest.raises(ValueError, match="pixel_values"):
        model(**batch, return_occupancy=True)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(occupancy_module="perceiver"), "occupancy_module"),  # the Literal annotation: a field error
        (dict(occupancy_module="cross_attention", occupancy_transformer_heads=5), "occupancy_transformer_heads"),
        (dict(occupancy_module="cross_attention", occupancy_transformer_layers=0), "occupancy_transformer_layers"),
        (dict(occupancy_module="cross_attention", occupancy_source_layer=3), "occupancy_source_layer"),
        (dict(occupancy_module="cross_attention", occupancy_source_layer=-4), "occupancy_source_layer"),
        (dict(occupancy_module="cross_attention", occupancy_source_layer="projector"), "occupancy_source_layer"),
    ],
    ids=["module", "heads", "layers", "source-too-deep", "source-too-negative", "source-not-an-index"],
)
def test_config_rejects_bad_occupancy_module_settings(overrides: dict, field: str) -> None:
    # A field error for a wrong type or choice, a class error (wrapping the config's ValueError) for a bad value.
    with pytest.raises((StrictDataclassFieldValidationError, StrictDataclassClassValidationError), match=field):
        tiny_config(**overrides)
    tiny_config(occupancy_module="cross_attention", occupancy_source_layer=-3)  # -3 = index 0 of 3 hidden states
