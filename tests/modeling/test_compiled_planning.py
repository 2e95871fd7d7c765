"""The fast planning path: static cache, a decoding step that compiles into one graph without host syncs, and
compiled planning equal to the eager dynamic-cache path."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention
from transformers import CompileConfig, StaticCache
from transformers.integrations.flex_attention import WrappedFlexAttention
from transformers.masking_utils import create_masks_for_generate

from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.modeling.modeling_occvla import decoding_masks, mask_cache
from tests.conftest import (
    TINY_GRID,
    TINY_TEXT_CONFIG,
    StandInOccupancyVAE,
    make_batch,
    static_decode_step_kwargs,
    tiny_config,
)

LAYOUTS = ["prompt", "after_text"]
NEW_TOKENS = 6


def layout_model(trajectory_position: str) -> OccVLAForPlanning:
    torch.manual_seed(0)
    return OccVLAForPlanning(tiny_config(trajectory_position=trajectory_position)).eval()


def layout_batch(model: OccVLAForPlanning) -> dict:
    return make_batch(model.config, planning=model.config.trajectory_position == "prompt")


def plan(model: OccVLAForPlanning, batch: dict, **kwargs):
    return model.plan(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kwargs)


def test_static_cache_decoding_step_is_one_graph_without_host_syncs() -> None:
    model = layout_model("prompt")
    step = static_decode_step_kwargs(model, layout_batch(model))
    assert isinstance(step["cache"], StaticCache)
    with torch.profiler.profile() as profiler:
        model(**copy.deepcopy(step))
    assert not [event for event in profiler.events() if event.name == "aten::_local_scalar_dense"]  # .item() etc.
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.forward)(**step)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("trajectory_position", LAYOUTS)
def test_static_cache_plan_from_the_generation_config_equals_the_dynamic_cache_plan(trajectory_position: str) -> None:
    model = layout_model(trajectory_position)
    batch = layout_batch(model)
    eager = plan(model, batch)
    caches: list[type] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: caches.append(type(kwargs["cache"])), with_kwargs=True)
    model.generation_config.cache_implementation = "static"
    static = plan(model, batch)
    assert caches and set(caches) == {StaticCache}
    assert torch.equal(static.sequences, eager.sequences)
    torch.testing.assert_close(static.trajectory, eager.trajectory, rtol=0, atol=1e-6)
    again = plan(model, batch)  # the static cache is sized again; the after-text step still fits
    assert torch.equal(again.sequences, eager.sequences)


@pytest.mark.slow
@pytest.mark.parametrize("trajectory_position", LAYOUTS)
def test_compiled_plan_equals_the_eager_plan(trajectory_position: str) -> None:
    model = layout_model(trajectory_position)
    batch = layout_batch(model)
    eager = plan(model, batch)
    compile_config = CompileConfig(fullgraph=True, mode="default")  # fullgraph: a graph break would raise
    compile_config._compile_all_devices = True  # transformers compiles on accelerators only unless told
    torch._dynamo.reset()
    compiled = plan(model, batch, cache_implementation="static", compile_config=compile_config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the decoding steps ran compiled
    assert torch.equal(compiled.sequences, eager.sequences)
    torch.testing.assert_close(compiled.trajectory, eager.trajectory, rtol=0, atol=1e-6)


# ------------------------------------------------------------------- Gemma-2 layers through FlexAttention

GEMMA2_TEXT_CONFIG = {
    **TINY_TEXT_CONFIG,
    "model_type": "gemma2",
    "attn_logit_softcapping": 0.01,  # a tiny random model's attention scores are small: cap them hard
    "final_logit_softcapping": 3.0,
    "query_pre_attn_scalar": 8,
    "sliding_window": 8,  # shorter than the sequence, so the sliding layers' masks differ from the full ones
}


def gemma2_model(**text_overrides) -> OccVLAForPlanning:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config(text_config={**GEMMA2_TEXT_CONFIG, **text_overrides}))
    model.set_occupancy_vae(StandInOccupancyVAE())
    return model.eval()


@pytest.mark.slow
def test_gemma2_flex_attention_equals_eager_in_the_training_forward_and_in_generation(monkeypatch) -> None:
    # transformers compiles flex attention; torch's CPU kernel fails to build for the decoding shapes, so the test runs
    # the uncompiled flex_attention (the same masks and score modifications: block mask, soft-capping).
    monkeypatch.setattr(WrappedFlexAttention, "__call__", lambda self: flex_attention)
    model = gemma2_model()
    batch = make_batch(model.config, text_length=10)
    batch["attention_mask"][1, :2] = 0  # left padding
    occupancy = torch.randint(0, 18, (2, *TINY_GRID), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    outputs, generated = {}, {}
    for implementation in ("eager", "flex_attention"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():  # flex attention has no backward on CPU
            outputs[implementation] = model(**batch, occupancy=occupancy)
        generated[implementation] = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    eager, flex = outputs["eager"], outputs["flex_attention"]
    for name in ("logits", "trajectory", "occupancy_latent"):
        torch.testing.assert_close(getattr(flex, name), getattr(eager, name), rtol=0, atol=1e-5, msg=name)
    assert torch.equal(generated["flex_attention"], generated["eager"])
    uncapped = gemma2_model(attn_logit_softcapping=None)
    uncapped.set_attn_implementation("eager")
    with torch.no_grad():
        assert not torch.allclose(uncapped(**batch).logits, eager.logits, atol=1e-3)  # the capping is compared


def test_gemma2_static_cache_plan_equals_the_dynamic_cache_plan() -> None:
    # A static cache gets one prepared mask per layer type (full and sliding) from `create_masks_for_generate`.
    model = gemma2_model()
    model.set_attn_implementation("eager")
    batch = make_batch(model.config, text_length=10)
    dynamic = plan(model, batch)
    static = plan(model, batch, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic.sequences)
    torch.testing.assert_close(static.trajectory, dynamic.trajectory, rtol=0, atol=1e-6)


@pytest.mark.parametrize("text", ["gemma", "gemma_after_text", "gemma2", "gemma2_window_over_the_cache"])
def test_flex_attention_with_a_static_cache_equals_eager_attention(monkeypatch, text: str) -> None:
    # A static cache's full-attention layer grows its length tensor in place in its update, before attention runs,
    # and flex attention's block mask reads its query offset then (`mask_cache`): without a snapshot every decoding
    # query sat one slot further on (an index error at the end of the cache, wrong masks before it). The decoding
    # steps' masks come from `decoding_masks`, except where a sliding window drops slots ("gemma2": 8 tokens).
    monkeypatch.setattr(WrappedFlexAttention, "__call__", lambda self: flex_attention)  # as in the test above
    if text.startswith("gemma2"):
        model = gemma2_model(**({"sliding_window": 4096} if text == "gemma2_window_over_the_cache" else {}))
        batch = make_batch(model.config, text_length=10)
    else:
        model = layout_model("after_text" if text == "gemma_after_text" else "prompt")
        batch = layout_batch(model)
    batch["attention_mask"][1, :3] = 0  # left padding
    outputs, plans = {}, {}
    for implementation, cache in (("eager", None), ("flex_attention", "static")):
        model.set_attn_implementation({"text_config": implementation, "vision_config": "sdpa"})
        outputs[implementation] = model.generate(
            **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
            cache_implementation=cache, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        plans[implementation] = plan(model, batch, cache_implementation=cache)
    eager, flex = outputs["eager"], outputs["flex_attention"]
    assert torch.equal(flex.sequences, eager.sequences)
    for step, (flex_logits, eager_logits) in enumerate(zip(flex.logits, eager.logits, strict=True)):
        torch.testing.assert_close(flex_logits, eager_logits, rtol=0, atol=1e-5, msg=f"step {step}")
    torch.testing.assert_close(plans["flex_attention"].trajectory, plans["eager"].trajectory, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("implementation", "text"),
    [(implementation, "gemma") for implementation in ("eager", "sdpa", "flex_attention")]
    + [  # transformers has no SDPA for Gemma-2 (soft-capping)
        (implementation, text)
        for implementation in ("eager", "flex_attention")
        for text in ("gemma2_window_over_the_cache", "gemma2")
    ],
)
def test_decoding_masks_equal_the_masks_of_transformers(monkeypatch, implementation: str, text: str) -> None:
    # Every decoding step of a static-cache `generate`, left padding included: the masks `create_masks_for_generate`
    # returns (from `decoding_masks`) against transformers' masks from the same inputs. Dense masks must be equal;
    # flex attention's block masks must attend alike. "gemma2": a window of 8 tokens, the sliding layers' cache has
    # dropped slots and transformers' masks are used.
    monkeypatch.setattr(WrappedFlexAttention, "__call__", lambda self: flex_attention)  # as in the tests above
    if text == "gemma":
        model = layout_model("prompt")
    else:
        model = gemma2_model(**({"sliding_window": 4096} if text == "gemma2_window_over_the_cache" else {}))
    model.set_attn_implementation({"text_config": implementation, "vision_config": "sdpa"})
    batch = make_batch(model.config, text_length=10)
    batch["attention_mask"][1, :3] = 0  # left padding
    text_config = model.config.get_text_config()
    original = OccVLAForPlanning.create_masks_for_generate
    steps: list[tuple] = []

    def compared(config, inputs_embeds, attention_mask, cache, position_ids, token_type_ids=None, **kwargs):
        ours = original(config, inputs_embeds, attention_mask, cache, position_ids, token_type_ids, **kwargs)
        if inputs_embeds.shape[1] == 1:
            theirs = create_masks_for_generate(
                text_config, inputs_embeds, attention_mask, mask_cache(cache, text_config), position_ids,
                block_sequence_ids=torch.where(token_type_ids == 0, 0, -1),
            )  # fmt: skip
            window_covers = decoding_masks(text_config, inputs_embeds, attention_mask, cache) is not None
            steps.append((ours, theirs, window_covers))
        return ours

    monkeypatch.setattr(OccVLAForPlanning, "create_masks_for_generate", staticmethod(compared))
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False, cache_implementation="static")
    assert len(steps) == 3 and all(covers == (text != "gemma2") for *_, covers in steps)
    generator = torch.Generator().manual_seed(0)
    for ours, theirs, _ in steps:
        if text == "gemma":
            ours, theirs = {"full_attention": ours}, {"full_attention": theirs}
        assert ours.keys() == theirs.keys()
        for layer_type, mask in ours.items():
            if implementation != "flex_attention":
                assert mask.dtype == theirs[layer_type].dtype and torch.equal(mask, theirs[layer_type]), layer_type
                continue
            length = mask.seq_lengths[1]
            assert theirs[layer_type].seq_lengths == (1, length)
            query = torch.randn(2, 2, 1, 16, generator=generator)
            key, value = (torch.randn(2, 2, length, 16, generator=generator) for _ in range(2))
            torch.testing.assert_close(
                flex_attention(query, key, value, block_mask=mask),
                flex_attention(query, key, value, block_mask=theirs[layer_type]),
                rtol=0,
                atol=1e-6,
                msg=layer_type,
            )


def test_a_prepared_decoding_mask_goes_through_as_it_is() -> None:
    model = layout_model("prompt")
    step = static_decode_step_kwargs(model, layout_batch(model))
    prepared = step["attention_mask"]  # the 4D mask `generate` prepared for this step
    assert isinstance(prepared, torch.Tensor) and prepared.ndim == 4
    embeds = torch.zeros(2, 1, model.config.text_config.hidden_size)
    masks = model.create_masks_for_generate(model.config, embeds, prepared, step["cache"], step["position_ids"])
    assert masks is prepared


def test_mask_cache_snapshots_the_length_of_static_layers_for_flex_attention() -> None:
    model = layout_model("prompt")
    step = static_decode_step_kwargs(model, layout_batch(model))
    cache, text_config = step["cache"], model.config.get_text_config()
    assert mask_cache(cache, text_config) is cache  # SDPA: masks are built at once
    text_config._attn_implementation = "flex_attention"
    view = mask_cache(cache, text_config)
    assert view is not cache and isinstance(view, StaticCache) and view.layers is cache.layers  # the keys stay shared
    length = cache.get_query_offset(0)
    offset = view.get_query_offset(0)
    assert offset is not length and int(offset) == int(length)
    length.add_(1)  # what the layer's update does before attention runs
    assert int(offset) == int(length) - 1 and int(view.get_query_offset(0)) == int(length)  # a new mask: the new length
