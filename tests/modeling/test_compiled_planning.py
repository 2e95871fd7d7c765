"""The fast planning path: static cache, a decoding step that compiles into one graph without host syncs, and
compiled planning equal to the eager dynamic-cache path."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CompileConfig, StaticCache

from occvla_hf.modeling import OccVLAForPlanning
from tests.conftest import make_batch, tiny_config

LAYOUTS = ["prompt", "after_text"]
NEW_TOKENS = 6


def layout_model(trajectory_position: str) -> OccVLAForPlanning:
    torch.manual_seed(0)
    return OccVLAForPlanning(tiny_config(trajectory_position=trajectory_position)).eval()


def layout_batch(model: OccVLAForPlanning) -> dict:
    return make_batch(model.config, planning=model.config.trajectory_position == "prompt")


def plan(model: OccVLAForPlanning, batch: dict, **kwargs):
    return model.plan(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kwargs)


def static_decode_step_kwargs(model: OccVLAForPlanning, batch: dict) -> dict:
    """The keyword arguments of the first decoding step of a static-cache `generate`, with a copy of its cache."""
    captured: list[dict] = []

    def record(module, args, kwargs) -> None:
        if kwargs["input_ids"].shape[1] == 1 and not captured:
            captured.append({**kwargs, "cache": copy.deepcopy(kwargs["cache"])})

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        model.generate(**batch, max_new_tokens=3, do_sample=False, cache_implementation="static")
    finally:
        handle.remove()
    return captured[0]


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
