"""Round trips and base models: from_vlm, save/load, Auto classes (self-contained folders: tests/test_remote_code.py)."""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
)

from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning, OccVLAModel
from tests.conftest import StandInOccupancyVAE, make_batch, static_decode_step_kwargs, tiny_config


def tiny_paligemma(text_model_type: str) -> PaliGemmaForConditionalGeneration:
    text_config = dict(
        model_type=text_model_type,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        vocab_size=99,
    )
    config = PaliGemmaConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=24,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=28,
            patch_size=14,
        ),
        text_config=text_config,
        image_token_index=98,
        projection_dim=32,
        hidden_size=32,
        vocab_size=99,
    )
    torch.manual_seed(0)
    return PaliGemmaForConditionalGeneration(config).eval()


def test_from_vlm_reproduces_paligemma_logits(tmp_path: Path) -> None:
    for text_model_type in ("gemma", "gemma2"):
        base = tiny_paligemma(text_model_type)
        base.save_pretrained(tmp_path / text_model_type)
        model, info = OccVLAForPlanning.from_vlm(tmp_path / text_model_type, num_views=1, output_loading_info=True)
        model.eval()
        assert model.config.traj_token_id == 99 and info["added_tokens"] == [99]
        assert any(key.startswith("trajectory_head.") for key in info["new_keys"])
        assert any(key.startswith("occupancy_head.") for key in info["new_keys"])
        input_ids = torch.tensor([[98] * 4 + [2, 17, 33, 5, 1], [98] * 4 + [2, 40, 41, 42, 1]])
        token_type_ids = torch.tensor([[0] * 7 + [1, 1], [0] * 8 + [1]])
        pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": token_type_ids,
        }
        with torch.no_grad():
            expected = base(**inputs, pixel_values=pixel_values).logits
            ours = model(**inputs, pixel_values=pixel_values.unsqueeze(1)).logits
        torch.testing.assert_close(ours[..., :99], expected, rtol=1e-5, atol=1e-5)


def test_from_vlm_moves_base_weights_and_initialises_only_the_new_parameters(tmp_path: Path) -> None:
    """Copied weights are the base's bit for bit; every new parameter gets `_init_weights`' distribution (a
    constant where it gives one, std `initializer_range` where it draws), as in a model built with `cls(config)`,
    and the same values under the same seed."""
    base = tiny_paligemma("gemma2")
    base.save_pretrained(tmp_path)
    base_state = base.state_dict()
    for occupancy_module in ("lm_queries", "cross_attention"):
        torch.manual_seed(5)
        model, info = OccVLAForPlanning.from_vlm(
            tmp_path, num_views=1, output_loading_info=True, occupancy_module=occupancy_module
        )
        torch.manual_seed(5)
        again = OccVLAForPlanning.from_vlm(tmp_path, num_views=1, occupancy_module=occupancy_module)
        reference = OccVLAForPlanning(model.config)  # transformers' full initialisation
        state, references, repeated = model.state_dict(), reference.state_dict(), again.state_dict()
        assert state.keys() == references.keys()
        embeddings = state["model.language_model.embed_tokens.weight"]
        base_embeddings = base_state["model.language_model.embed_tokens.weight"]
        assert torch.equal(embeddings[:99], base_embeddings)
        assert torch.equal(embeddings[99], base_embeddings.mean(dim=0))
        assert model.lm_head.weight is model.get_input_embeddings().weight
        copied = set(base_state) - {"model.language_model.embed_tokens.weight", "lm_head.weight"}
        assert copied.isdisjoint(info["new_keys"])
        for key in copied:
            assert torch.equal(state[key], base_state[key]), key
        assert set(state) == copied | set(info["new_keys"]) | {"model.language_model.embed_tokens.weight",
                                                                 "lm_head.weight"}  # fmt: skip
        for key in info["new_keys"]:
            value, expected = state[key], references[key]
            assert value.dtype == expected.dtype and value.shape == expected.shape, key
            assert torch.isfinite(value).all(), key
            assert torch.equal(value, repeated[key]), key
            if (expected == expected.flatten()[0]).all():  # zeros (biases), ones (LayerNorm weights)
                assert torch.equal(value, expected), key
            else:
                assert value.unique().numel() > value.numel() // 2, key
                if value.numel() >= 1000:
                    torch.testing.assert_close(value.std(), expected.std(), rtol=0.15, atol=0), key
                    assert value.mean().abs() < 0.1 * expected.std(), key
        assert all(key.startswith("model.occupancy_transformer.") == (occupancy_module == "cross_attention")
                   for key in info["new_keys"] if key.startswith("model."))  # fmt: skip


def test_from_vlm_starts_traj_at_the_mean_in_an_unused_base_row_and_keeps_the_head_in_float32(tmp_path: Path) -> None:
    """PaliGemma's embedding has rows past its tokenizer: a `<traj>` id there reuses the row, which starts at the
    mean embedding like a grown one; the other rows and the vocabulary size stay the base's."""
    base = tiny_paligemma("gemma")
    base.save_pretrained(tmp_path)
    base_embeddings = base.state_dict()["model.language_model.embed_tokens.weight"]
    model, info = OccVLAForPlanning.from_vlm(
        tmp_path, num_views=1, traj_token_id=97, dtype=torch.bfloat16, output_loading_info=True
    )
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == 99 and info["added_tokens"] == []
    assert torch.equal(embeddings[97], base_embeddings.to(torch.bfloat16).mean(dim=0))  # the mean of the loaded rows
    kept = torch.arange(99) != 97
    assert torch.equal(embeddings[kept], base_embeddings[kept].to(torch.bfloat16))
    assert all(p.dtype == torch.float32 for p in model.trajectory_head.parameters())
    assert model.model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_from_vlm_grows_an_untied_lm_head_with_a_zero_row(tmp_path: Path) -> None:
    config = tiny_paligemma("gemma").config
    config.tie_word_embeddings = False
    torch.manual_seed(3)
    base = PaliGemmaForConditionalGeneration(config).eval()
    base.save_pretrained(tmp_path)
    model = OccVLAForPlanning.from_vlm(tmp_path, num_views=1)
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert torch.equal(model.lm_head.weight[:99], base.lm_head.weight)
    assert torch.equal(model.lm_head.weight[99], torch.zeros(32))  # `<traj>` gets no logit mass from the start


def test_from_vlm_raises_on_a_new_parameter_that_init_weights_leaves_out(tmp_path: Path, monkeypatch) -> None:
    tiny_paligemma("gemma").save_pretrained(tmp_path)
    init_weights = OccVLAForPlanning._init_weights

    def skip_occupancy_head_fc1(self, module):
        head = getattr(self, "occupancy_head", None)
        if head is None or module is not head.fc1:
            init_weights(self, module)

    monkeypatch.setattr(OccVLAForPlanning, "_init_weights", skip_occupancy_head_fc1)
    with pytest.raises(RuntimeError, match=r"uninitialised: \['occupancy_head\.fc1\.bias'"):
        OccVLAForPlanning.from_vlm(tmp_path, num_views=1)


def test_config_json_round_trip(tmp_path: Path) -> None:
    config = tiny_config(num_views=6, use_ego_status=False, occupancy_voxel_loss_weight=0.5)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, OccVLAConfig)
    loaded_fields, fields = loaded.to_dict(), config.to_dict()
    loaded_fields.pop("_name_or_path")  # where it was loaded from
    fields.pop("_name_or_path")
    assert loaded_fields == fields
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "occvla"


def test_save_and_load_give_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config()).eval()
    batch = make_batch(model.config)
    expected = model(**batch, return_occupancy=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    for loaded in (OccVLAForPlanning.from_pretrained(tmp_path), AutoModelForImageTextToText.from_pretrained(tmp_path)):
        assert isinstance(loaded, OccVLAForPlanning)
        out = loaded.eval()(**batch, return_occupancy=True)
        for name in ("logits", "trajectory", "occupancy_latent"):
            torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=0, atol=0)
    assert isinstance(AutoModel.from_pretrained(tmp_path), OccVLAModel)


def test_inference_export_drops_occupancy_modules_only_on_request(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config()).eval()
    batch = make_batch(model.config)
    expected = model(**batch)
    model.save_pretrained(tmp_path / "full")
    assert OccVLAForPlanning.from_pretrained(tmp_path / "full").occupancy_head is not None
    model.without_occupancy_modules().save_pretrained(tmp_path / "inference")
    loaded = OccVLAForPlanning.from_pretrained(tmp_path / "inference").eval()
    assert loaded.occupancy_head is None and loaded.model.occupancy_queries is None
    out = loaded(**batch)
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.trajectory, expected.trajectory, rtol=0, atol=0)


def test_stand_in_vae_is_kept_frozen_after_loading_weights() -> None:
    model = OccVLAForPlanning(tiny_config())
    model.set_occupancy_vae(StandInOccupancyVAE())
    model.train()
    assert not model.occupancy_vae.training
    assert not any(p.requires_grad for p in model.occupancy_vae.parameters())


def _decode_step_graph_ops(model, inputs: dict) -> tuple[set[str], Counter]:
    """The inputs of the first decoding step of a static-cache `generate`, and the FX ops (by target) of `model`'s
    forward compiled for it (the graph transformers compiles on accelerators), `getitem`s left out (tuple unpacking,
    not work)."""
    step = static_decode_step_kwargs(model, inputs)
    graphs: list[torch.fx.GraphModule] = []

    def backend(graph_module: torch.fx.GraphModule, example_inputs) -> Callable:
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model.forward, backend=backend, fullgraph=True)(**step)
    nodes = [node for graph in graphs for node in graph.graph.nodes if node.op.startswith("call_")]
    step_inputs = {name for name, value in step.items() if value is not None}
    return step_inputs, Counter(str(node.target) for node in nodes if node.target is not operator.getitem)


def test_the_static_cache_decoding_step_is_paligemmas_op_for_op(tmp_path: Path) -> None:
    """The fast path's zero overhead at the graph level: OccVLA's compiled decoding step takes the same inputs and
    runs the same operations as the PaliGemma it is initialised from (`from_vlm`), so the queries and heads cost
    nothing there either."""
    base = tiny_paligemma("gemma")
    base.save_pretrained(tmp_path)
    model = OccVLAForPlanning.from_vlm(tmp_path, num_views=1).eval()
    input_ids = torch.tensor([[98] * 4 + [2, 17, 33, 5, 99]])  # 4 image tokens, the prompt, `<traj>`
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "token_type_ids": torch.zeros_like(input_ids)}  # fmt: skip
    pixel_values = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    ego_status = torch.zeros(1, model.config.ego_status_dim)
    ours = _decode_step_graph_ops(
        model, {**inputs, "pixel_values": pixel_values.unsqueeze(1), "ego_status": ego_status}
    )
    reference = _decode_step_graph_ops(
        base, {**inputs, "input_ids": input_ids.masked_fill(input_ids == 99, 5), "pixel_values": pixel_values}
    )
    assert sum(reference[1].values()) > 50  # the whole step: every layer's projections, attention and the LM head
    assert ours[0] == reference[0]  # the same inputs: the ego status fed the trajectory head in the prefill only
    assert ours[1] == reference[1]
