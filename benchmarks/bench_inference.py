"""Inference cost of OccVLA against the same-shaped PaliGemma, measured side by side in one process.

Full shape: PaliGemma-2-3B (SigLIP-So400m/14 at 224 px, Gemma-2-2B sizes), random weights, SDPA. Rows: prefill latency
(1 and 6 views), `generate()` of 32 tokens, `plan()` (trajectory head + meta-action), the trajectory read from the
prefill alone, and decoding the 6 waypoints as text instead (what a text-waypoint planner pays), at batch 1/8/32.
Timed with `occvla_hf.evaluation.timing` (CUDA events on GPU); every number is the median of `--repeats` runs after
`--warmup` runs.

`--fast`: the real-time planning path instead, at 6 views (the flex-attention rows put flex attention in the LM and
keep the SigLIP tower on SDPA: `lm_attention`). The decoding step (ms per token, from generating 1 + 16
tokens against 1) of OccVLA beside PaliGemma with the default dynamic cache and with `cache_implementation="static"`
(which transformers compiles on CUDA, with CUDA graphs); `plan()` (8 tokens) at batch 1 and plans/s at batch 32 on
that path against the dynamic one; the batch-8 prefill with FlexAttention against SDPA (TFLOP/s, % of the dense bf16
peak); and real Gemma-2 layers (attention-logit soft-capping, which SDPA cannot express) with FlexAttention against
eager, in the prefill and the static-cache decoding step. `--rows` picks groups of these rows (decode, plan, prefill,
gemma2).

    python benchmarks/bench_inference.py --device cuda --dtype bf16
    python benchmarks/bench_inference.py --device cuda --dtype bf16 --fast
    python benchmarks/bench_inference.py --device cuda --dtype bf16 --profile-masks   # host cost of the masks
    python benchmarks/bench_inference.py --device cuda --dtype bf16 --profile-decode  # host vs device per step
    python benchmarks/bench_inference.py --tiny --device cpu        # smoke run on a tiny config
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import transformers
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PreTrainedModel, StaticCache
from transformers.masking_utils import create_masks_for_generate

from occvla_hf.evaluation.timing import call_times_ms, synchronize
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.modeling_occvla import mask_cache

GENERATE_TOKENS = 32
META_ACTION_TOKENS = 8  # "decelerate, left lane change" and an end token, in a Gemma-sized vocabulary
TEXT_PROMPT_TOKENS = 24
DECODE_STEPS = 16  # decoding steps timed beyond the first generated token, for the per-step rows of --fast
PREFILL_BATCH, THROUGHPUT_BATCH = 8, 32  # --fast rows
FAST_ROWS = ("decode", "plan", "prefill", "gemma2")  # --fast row groups (--rows), in the order they are measured
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense, SXM
STATIC_CACHE = {"cache_implementation": "static"}  # transformers compiles the decoding step on accelerators
COMPILED_CALL = "## Call CompiledFxGraph"  # the profiler range of each call of an inductor-compiled graph

# Gemma-2-2B sizes in Gemma layers: transformers runs Gemma-2 layers with eager attention only (SDPA cannot express
# their attention-logit soft-capping), so the SDPA comparison uses the same shapes without soft-capping.
GEMMA2_2B = dict(
    model_type="gemma",
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    vocab_size=257216,
)
SIGLIP_SO400M = dict(
    model_type="siglip_vision_model",
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    patch_size=14,
    image_size=224,
    vision_use_head=False,
)
TINY_TEXT = dict(
    GEMMA2_2B,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=512,
)
TINY_VISION = dict(
    SIGLIP_SO400M, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56
)
# PaliGemma-2's text layers: Gemma-2-2B's soft-capping, scaling and sliding window, over the sizes above.
GEMMA2_LAYERS = dict(
    model_type="gemma2",
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    query_pre_attn_scalar=256,
    sliding_window=4096,
)


@dataclass
class Timer:
    device: torch.device
    warmup: int
    repeats: int

    def __call__(self, fn: Callable[[], object]) -> float:
        """Median milliseconds of `fn()`."""
        return self.pair(fn, None)[0]

    def medians(self, fns: list[Callable[[], object]]) -> list[float]:
        """Median milliseconds of each function, all run alternately."""
        times = call_times_ms(fns, repeats=self.repeats, warmup=self.warmup, device=self.device)
        return [statistics.median(bucket) for bucket in times]

    def pair(self, fn_a: Callable[[], object], fn_b: Callable[[], object] | None) -> tuple[float, float]:
        """Median milliseconds of `fn_a()` and `fn_b()`, run alternately so that drift (clocks, host load) hits
        both alike; ratios of the two are the numbers to trust."""
        fns = [fn for fn in (fn_a, fn_b) if fn is not None]
        times = call_times_ms(fns, repeats=self.repeats, warmup=self.warmup, device=self.device)
        medians = [statistics.median(bucket) for bucket in times]
        return medians[0], (medians[1] if fn_b is not None else float("nan"))


def waypoint_text_tokens() -> int:
    """Tokens a text-waypoint decoder emits for 6 waypoints, e.g. "[(+3.41,-0.12), ...]".

    Gemma's tokenizer splits numbers into single digits, so every digit is one token; every run of other characters
    is counted as one token (a low estimate), plus an end token.
    """
    text = "[" + ", ".join(f"({x:+.2f},{y:+.2f})" for x, y in [(3.41, -0.12)] * 6) + "]"
    return len(re.findall(r"\d|[^\d]+", text)) + 1


def occvla_config(tiny: bool, num_views: int, gemma2: bool = False) -> OccVLAConfig:
    """The benchmark shape (tiny or PaliGemma-2-3B), in Gemma layers or, with `gemma2`, in real Gemma-2 layers."""
    text, vision = (TINY_TEXT, TINY_VISION) if tiny else (GEMMA2_2B, SIGLIP_SO400M)
    config = OccVLAConfig(
        vision_config=vision,
        text_config={**text, **(GEMMA2_LAYERS if gemma2 else {})},
        image_token_id=text["vocab_size"] - 2,
        traj_token_id=text["vocab_size"] - 1,
        num_views=num_views,
    )
    config.text_config.use_bidirectional_attention = True  # as PaliGemma's config sets it
    return config


def build_occvla(config: OccVLAConfig, dtype: torch.dtype, device: torch.device) -> OccVLAForPlanning:
    torch.manual_seed(0)
    with torch.device(device):
        model = OccVLAForPlanning(config).to(dtype).eval()
    _fixed_length_decoding(model)
    return model


def _fixed_length_decoding(model: PreTrainedModel) -> None:
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # fixed-length decoding for every model


def build_models(tiny: bool, num_views: int, dtype: torch.dtype, device: torch.device):
    text, vision = (TINY_TEXT, TINY_VISION) if tiny else (GEMMA2_2B, SIGLIP_SO400M)
    config = occvla_config(tiny, num_views)
    image_token_id = config.image_token_id
    paligemma_config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        projection_dim=text["hidden_size"],
        hidden_size=text["hidden_size"],
        vocab_size=text["vocab_size"],
    )
    occvla = build_occvla(config, dtype, device)
    with torch.device(device):
        paligemma = PaliGemmaForConditionalGeneration(paligemma_config).to(dtype).eval()
    _fixed_length_decoding(paligemma)
    return occvla, paligemma


def make_inputs(model: OccVLAForPlanning, batch: int, dtype: torch.dtype, device: torch.device) -> dict:
    config = model.config
    image_tokens = config.num_views * config.image_seq_length
    prompt = torch.randint(2, 1000 if config.text_config.vocab_size > 1000 else 400, (batch, TEXT_PROMPT_TOKENS))
    prompt[:, -1] = config.traj_token_id
    input_ids = torch.cat([torch.full((batch, image_tokens), config.image_token_id), prompt], dim=1).to(device)
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "pixel_values": torch.randn(batch, config.num_views, 3, size, size, device=device, dtype=dtype),
        "ego_status": torch.randn(batch, config.ego_status_dim, device=device, dtype=dtype),
    }


def paligemma_inputs(inputs: dict, image_token_id: int, traj_token_id: int) -> dict:
    """Same sequence for PaliGemma: views flattened into its image batch, `<traj>` replaced by an ordinary token."""
    input_ids = inputs["input_ids"].masked_fill(inputs["input_ids"] == traj_token_id, 5)
    return {
        "input_ids": input_ids,
        "attention_mask": inputs["attention_mask"],
        "token_type_ids": inputs["token_type_ids"],
        "pixel_values": inputs["pixel_values"].flatten(0, 1),
    }


def run(args: argparse.Namespace) -> list[tuple[str, ...]]:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    timer = Timer(device, args.warmup, args.repeats)
    rows: list[tuple[str, ...]] = []
    for num_views in args.views:
        occvla, paligemma = build_models(args.tiny, num_views, dtype, device)
        for batch in args.batches:
            if num_views == 1 and batch != 1:
                continue  # single-view rows: prefill latency only
            with torch.inference_mode():
                rows += _measure(occvla, paligemma, batch, timer, dtype, device)
        occvla = paligemma = None  # free the GPU before the next shape
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _generate(model, inputs: dict, tokens: int, **kwargs) -> Callable[[], object]:
    """Fixed-length greedy decoding of `tokens` tokens."""
    return lambda: model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **kwargs)


def _prefill(model, inputs: dict) -> Callable[[], object]:
    return lambda: model(**inputs, use_cache=True, logits_to_keep=1)


def _plan(model: OccVLAForPlanning, inputs: dict, **kwargs) -> Callable[[], object]:
    tokens = META_ACTION_TOKENS
    return lambda: model.plan(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)


def _measure(occvla, paligemma, batch: int, timer: Timer, dtype: torch.dtype, device: torch.device) -> list:
    """The rows of one (views, batch) point."""
    cfg = occvla.config
    views = cfg.num_views
    ours = make_inputs(occvla, batch, dtype, device)
    base = paligemma_inputs(ours, cfg.image_token_id, cfg.traj_token_id)
    text_only = {**{k: v for k, v in ours.items() if k != "ego_status"}, "input_ids": base["input_ids"]}

    prefill_ours, prefill_base = timer.pair(_prefill(occvla, ours), _prefill(paligemma, base))
    rows = [_row("prefill", views, batch, prefill_ours, prefill_base)]
    prefill_text, prefill_base = timer.pair(_prefill(occvla, text_only), _prefill(paligemma, base))
    rows.append(_row("prefill, no <traj>", views, batch, prefill_text, prefill_base))  # the pure VLM path
    if views == 1:
        return rows
    gen_ours, gen_base = timer.pair(
        _generate(occvla, ours, GENERATE_TOKENS), _generate(paligemma, base, GENERATE_TOKENS)
    )
    generated = batch * GENERATE_TOKENS
    rows.append(_row(f"generate {GENERATE_TOKENS} tok", views, batch, gen_ours, gen_base, tokens=generated))
    text_tokens = waypoint_text_tokens()
    plan_ms, text_plan_ms = timer.pair(_plan(occvla, ours), _generate(occvla, ours, META_ACTION_TOKENS + text_tokens))
    rows.append(_row("plan() vs text waypoints", views, batch, plan_ms, text_plan_ms))
    text_traj_ms = timer(_generate(occvla, ours, text_tokens))
    rows.append(_row("trajectory: head vs text", views, batch, prefill_ours, text_traj_ms))
    return rows


def decode_step_ms(timer: Timer, runs: list[tuple[object, dict]], **kwargs) -> list[float]:
    """Milliseconds per decoding step of each (model, inputs), timed alternately: generating 1 + DECODE_STEPS tokens
    against 1 token, so that the prefill cancels out."""
    fns = []
    for model, inputs in runs:
        fns += [_generate(model, inputs, 1 + DECODE_STEPS, **kwargs), _generate(model, inputs, 1, **kwargs)]
    medians = timer.medians(fns)
    return [(long - short) / DECODE_STEPS for long, short in zip(medians[::2], medians[1::2], strict=True)]


def prefill_flops(model: OccVLAForPlanning, batch: int) -> float:
    """Matmul FLOPs of a planning prefill (`make_inputs`): towers, projector, attention, LM head at one position."""
    config = model.config
    vision, text = config.vision_config, config.text_config
    patches, views = config.image_seq_length, config.num_views
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    vision_fwd = (
        batch * views * (2 * vision_params * patches + 4 * vision.num_hidden_layers * patches**2 * vision.hidden_size)
    )
    projector_fwd = batch * views * patches * 2 * vision.hidden_size * text.hidden_size
    seq = views * patches + TEXT_PROMPT_TOKENS
    lm_params = sum(p.numel() for p in model.model.language_model.parameters()) - text.vocab_size * text.hidden_size
    attention_width = text.num_attention_heads * text.head_dim
    lm_fwd = batch * (2 * lm_params * seq + 4 * text.num_hidden_layers * seq**2 * attention_width)
    return vision_fwd + projector_fwd + lm_fwd + batch * 2 * text.hidden_size * text.vocab_size


def run_fast(args: argparse.Namespace) -> Iterator[tuple[str, ...]]:
    """The rows of `--fast` (see the module docstring), 6 views, each as soon as it is measured."""
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    timer = Timer(device, args.warmup, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)
    rows = set(args.rows)
    occvla, paligemma = build_models(args.tiny, 6, dtype, device)
    with torch.inference_mode():
        ours = make_inputs(occvla, 1, dtype, device)
        base = paligemma_inputs(ours, occvla.config.image_token_id, occvla.config.traj_token_id)
        for label, kwargs in (("dynamic cache", {}), ("static cache", STATIC_CACHE)) if "decode" in rows else ():
            ours_ms, base_ms = decode_step_ms(timer, [(occvla, ours), (paligemma, base)], **kwargs)
            yield _fast_row(f"decode step, {label}", 1, ours_ms, "PaliGemma", base_ms, f"{1000 / ours_ms:.0f} tok/s")
        for batch in (1, THROUGHPUT_BATCH) if "plan" in rows else ():
            inputs = ours if batch == 1 else make_inputs(occvla, batch, dtype, device)
            static_ms, dynamic_ms = timer.pair(_plan(occvla, inputs, **STATIC_CACHE), _plan(occvla, inputs))
            plans = f"{batch * 1000 / static_ms:.1f} plans/s"
            yield _fast_row("plan(), static cache", batch, static_ms, "dynamic cache", dynamic_ms, plans)
        flex_rows = {
            "prefill": ("prefill, flex attention",),
            "gemma2": ("Gemma-2 prefill, flex attention", "Gemma-2 decode step, static cache"),
        }
        if device.type != "cuda":  # torch's CPU flex-attention kernels do not build for every shape here
            names = [name for group, names in flex_rows.items() if group in rows for name in names]
            yield from ((name, "-", "n/a", "-", "n/a", "-", "CUDA only") for name in names)
            return
        inputs = make_inputs(occvla, PREFILL_BATCH, dtype, device)
        if "prefill" in rows:
            prefill = _prefill(occvla, inputs)
            flex, sdpa = lm_attention("flex_attention"), lm_attention("sdpa")
            flex_ms, sdpa_ms = _attention_pair(timer, occvla, prefill, flex, sdpa)
            tflops = prefill_flops(occvla, PREFILL_BATCH) / (flex_ms / 1000) / 1e12
            share = f", {100 * tflops / peak:.0f} % of peak" if peak else ""
            yield _fast_row(
                "prefill, flex attention", PREFILL_BATCH, flex_ms, "SDPA", sdpa_ms, f"{tflops:.1f} TFLOP/s{share}"
            )
        if "gemma2" not in rows:
            return
        occvla = paligemma = None  # room for the Gemma-2 model
        gemma2 = build_occvla(occvla_config(args.tiny, 6, gemma2=True), dtype, device)
        flex, eager = lm_attention("flex_attention"), lm_attention("eager")
        flex_ms, eager_ms = _attention_pair(timer, gemma2, _prefill(gemma2, inputs), flex, eager)
        yield _fast_row("Gemma-2 prefill, flex attention", PREFILL_BATCH, flex_ms, "eager", eager_ms, "-")
        step_ms = []
        for implementation in (flex, eager):
            gemma2.set_attn_implementation(implementation)
            step_ms.append(decode_step_ms(timer, [(gemma2, ours)], **STATIC_CACHE)[0])
        flex_ms, eager_ms = step_ms
        yield _fast_row("Gemma-2 decode step, static cache", 1, flex_ms, "eager", eager_ms, "flex attention")


def lm_attention(implementation: str) -> dict[str, str]:
    """`set_attn_implementation` argument giving the LM `implementation` and the SigLIP tower SDPA: with flex
    attention in both, the compiled flex kernel sees the tower's batch (views) and the LM's, and is marked dynamic."""
    return {"text_config": implementation, "vision_config": "sdpa"}


def _attention_pair(
    timer: Timer, model: PreTrainedModel, fn: Callable[[], object], impl_a: str | dict, impl_b: str | dict
):
    """Median milliseconds of `fn()` with attention implementation `impl_a` and `impl_b` (switched in between, so
    timed one after the other, not alternately); the model is left on `impl_b`."""
    medians = []
    for implementation in (impl_a, impl_b):
        model.set_attn_implementation(implementation)
        medians.append(timer(fn))
    return tuple(medians)


def _fast_row(name: str, batch: int, ours_ms: float, reference: str, reference_ms: float, throughput: str):
    return (
        name,
        str(batch),
        f"{ours_ms:.2f}",
        reference,
        f"{reference_ms:.2f}",
        f"{ours_ms / reference_ms:.3f}",
        throughput,
    )


def profile_prefill(args: argparse.Namespace) -> None:
    """Where a batch-1, 6-view prefill spends its time, for OccVLA (no <traj>) and PaliGemma."""
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    occvla, paligemma = build_models(args.tiny, 6, dtype, device)
    ours = make_inputs(occvla, 1, dtype, device)
    base = paligemma_inputs(ours, occvla.config.image_token_id, occvla.config.traj_token_id)
    text_only = {**{k: v for k, v in ours.items() if k != "ego_status"}, "input_ids": base["input_ids"]}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    with torch.inference_mode():
        for name, model, inputs in (("OccVLA", occvla, text_only), ("PaliGemma", paligemma, base)):
            for _ in range(3):
                model(**inputs, use_cache=True, logits_to_keep=1)
            with torch.profiler.profile(activities=activities) as profiler:
                for _ in range(5):
                    model(**inputs, use_cache=True, logits_to_keep=1)
                synchronize(device)
            print(f"## {name}: 5 prefills")
            print(profiler.key_averages().table(sort_by=sort_key, row_limit=18, max_name_column_width=50))


def profile_decode(args: argparse.Namespace) -> None:
    """Where a batch-1 static-cache decoding step spends its time, OccVLA beside PaliGemma, under the profiler.

    Wall time per step: `--repeats` calls of `generate` of 1 + DECODE_STEPS tokens against 1, so that the prefill
    cancels out. GPU time per step: the GPU span of the compiled decoding step (inductor's `COMPILED_CALL` ranges;
    the kernels that a CUDA graph replays are not listed one by one, and summing every row's device time would count
    the ranges and their kernels twice). The rest of the step is the host's: `generate`'s own work between the
    compiled steps. The table after each model lists the host ops of its long run."""
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    occvla, paligemma = build_models(args.tiny, 6, dtype, device)
    ours = make_inputs(occvla, 1, dtype, device)
    base = paligemma_inputs(ours, occvla.config.image_token_id, occvla.config.traj_token_id)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    steps = args.repeats * DECODE_STEPS  # decoding steps beyond the first token, over the timed calls
    rows = []
    with torch.inference_mode():
        for name, model, inputs in (("OccVLA", occvla, ours), ("PaliGemma", paligemma, base)):
            wall_ms, events = {}, {}
            for tokens in (1 + DECODE_STEPS, 1):
                generate = _generate(model, inputs, tokens, **STATIC_CACHE)
                for _ in range(max(args.warmup, 1)):
                    generate()
                synchronize(device)
                with torch.profiler.profile(activities=activities) as profiler:  # both, so its overhead cancels
                    wall_ms[tokens] = sum(call_times_ms([generate], repeats=args.repeats, device=device)[0])
                events[tokens] = profiler.key_averages()
            print(f"## {name}: host ops of {args.repeats} generate({1 + DECODE_STEPS} tokens) calls, static cache")
            print(events[1 + DECODE_STEPS].table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))
            compiled = [event for event in events[1 + DECODE_STEPS] if event.key.startswith(COMPILED_CALL)]
            gpu_ms = sum(event.self_device_time_total for event in compiled) / 1000 if compiled else float("nan")
            rows.append((name, (wall_ms[1 + DECODE_STEPS] - wall_ms[1]) / steps, gpu_ms / steps))
    print("| decoding step, batch 1, static cache | wall ms | GPU span of the compiled step ms | host ms |")
    print("|---|---|---|---|")
    for name, wall, gpu in rows:
        print(f"| {name} | {wall:.2f} | {gpu:.2f} | {wall - gpu:.2f} |")


def profile_masks(args: argparse.Namespace) -> None:
    """Host time of one decoding step's attention masks, built outside the compiled step: OccVLA's
    (`create_masks_for_generate`, which builds a decoding step's masks from the query's slot, `decoding_masks`)
    against transformers' mask functions on the same inputs (what OccVLA and PaliGemma ran before), timed
    alternately. Gemma-2 layers (a full and a sliding-window mask) with eager and with flex attention in the LM, and
    Gemma layers with SDPA; a static cache after a 6-view prefill, the inputs `generate` gives a decoding step."""
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    timer = Timer(device, args.warmup, args.repeats)
    print("| masks of one decoding step | positions | OccVLA ms | transformers ms | ratio |\n|---|---|---|---|---|")
    for layers, gemma2, implementations in (
        ("Gemma-2", True, ("eager", "flex_attention")),
        ("Gemma", False, ("sdpa",)),
    ):
        model = build_occvla(occvla_config(args.tiny, 6, gemma2=gemma2), dtype, device)
        inputs = make_inputs(model, 1, dtype, device)
        length = inputs["input_ids"].shape[1]
        text_config = model.config.get_text_config(decoder=True)
        cache = StaticCache(config=text_config, max_cache_len=length + 1 + DECODE_STEPS)
        with torch.inference_mode():
            model(**inputs, cache=cache, use_cache=True, logits_to_keep=1)  # the prefill fills the cache
            step = {
                "inputs_embeds": model.get_input_embeddings()(inputs["input_ids"][:, -1:]),
                "attention_mask": torch.ones(1, length + 1, dtype=torch.long, device=device),
                "position_ids": torch.full((1, 1), length + 1, device=device),  # 1-indexed, as PaliGemma
            }
            token_type_ids = torch.ones(1, length + 1, dtype=torch.long, device=device)
            block_ids = torch.where(token_type_ids == 0, 0, -1)  # as OccVLA's masks before: no prefix block here
            for implementation in implementations:
                model.set_attn_implementation(lm_attention(implementation))
                ours_ms, theirs_ms = timer.pair(
                    lambda: model.create_masks_for_generate(
                        model.config, **step, cache=cache, token_type_ids=token_type_ids
                    ),
                    lambda: create_masks_for_generate(
                        text_config, **step, cache=mask_cache(cache, text_config), block_sequence_ids=block_ids
                    ),
                )
                print(
                    f"| {layers} layers, {implementation}, batch 1 | {length + 1} | {ours_ms:.3f} | {theirs_ms:.3f} | "
                    f"{ours_ms / theirs_ms:.2f} |"
                )
        model = None  # room for the next model


def _row(name: str, views: int, batch: int, ours_ms: float, other_ms: float, tokens: int | None = None):
    throughput = f"{tokens / (ours_ms / 1000):.0f}" if tokens else "-"
    return (name, str(views), str(batch), f"{ours_ms:.2f}", f"{other_ms:.2f}", f"{ours_ms / other_ms:.3f}", throughput)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random config (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--views", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--profile-prefill", action="store_true", help="kernel tables of the batch-1 prefills, then exit"
    )
    parser.add_argument(
        "--profile-decode", action="store_true", help="wall vs device time of a static-cache decoding step, then exit"
    )
    parser.add_argument(
        "--profile-masks",
        action="store_true",
        help="host time of a decoding step's masks against transformers', then exit",
    )
    parser.add_argument("--fast", action="store_true", help="the real-time planning path's rows instead")
    parser.add_argument(
        "--rows", nargs="+", choices=FAST_ROWS, default=list(FAST_ROWS), help="the groups of --fast rows to measure"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"# device {name}, torch {torch.__version__}, transformers {transformers.__version__}, {args.dtype}, "
        f"{'tiny' if args.tiny else 'PaliGemma-2-3B shape'}, sdpa; waypoints as text = {waypoint_text_tokens()} "
        f"tokens"
    )
    if args.profile_prefill:
        profile_prefill(args)
        return
    if args.profile_decode:
        profile_decode(args)
        return
    if args.profile_masks:
        profile_masks(args)
        return
    if args.fast:
        compiled = "compiled, CUDA graphs" if args.device.startswith("cuda") else "not compiled off CUDA"
        print(
            f"# fast path: 6 views; static cache: decoding step {compiled}; decode step = (1 + {DECODE_STEPS} "
            f"tokens - 1 token) / {DECODE_STEPS}"
        )
        header = ("measurement", "batch", "OccVLA ms", "reference", "reference ms", "ratio", "OccVLA throughput")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in run_fast(args):
            print("| " + " | ".join(row) + " |", flush=True)
        return
    header = ("measurement", "views", "batch", "OccVLA ms", "reference ms", "ratio", "OccVLA tok/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in run(args):
        print("| " + " | ".join(row) + " |")
    print("reference: PaliGemma for prefill/generate rows; OccVLA decoding waypoints as text for the other rows")


if __name__ == "__main__":
    main()
