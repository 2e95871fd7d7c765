"""Training-step cost of occupancy supervision: step time, GPU busy share, tokens/s, peak memory and MFU per
occupancy target mode, with activation checkpointing off and on.

Modes (one row each): `none` (no occupancy target: the queries are not built), `grids` (occupancy grids, encoded by
the frozen VAE inside every step) and `latents` (the VAE's latents of the same grids, computed once before timing and
passed as `occupancy_latents`: the cached path of `occvla_hf.training.latent_cache`). "vs none" is the step time
against `none`, the three modes timed alternately in one process. "GPU busy" is the summed CUDA kernel time of a step
(torch.profiler, over `--repeats` profiled steps of the mode) over its median step time; n/a on CPU.

Shapes (`--shape`):
- `full`: PaliGemma-2-3B (SigLIP-So400m/14 at 224 px, Gemma-2-2B) with the default 10 x 10 occupancy queries and the
  default occupancy VAE (200 x 200 x 16 grid, latent 128 x 50 x 50).
- `scale`: the at-scale ablation's model, read from `configs/scale_joint.yaml`'s `model` section and built as its
  recipe builds it (SigLIP-like 224 px / patch 16, Gemma-like LM, 25 x 25 queries; about 50 M parameters), with a
  random VAE of `configs/scale_vae.yaml`'s `model` shape (latent 32 x 100 x 100).
- `tiny` (`--tiny`): a tiny random config (smoke test).
All have 6 camera views and a 64-token prompt + answer. Weights are `--dtype` (`bf16-autocast`: fp32 weights under
bf16 autocast, as the recipes' `bf16: true` trains), fused AdamW on CUDA, SDPA. MFU counts the matmul FLOPs of the
forward and backward of the model (vision tower, projector, LM with its attention, LM head, occupancy head; 3x
forward; not the frozen VAE's encode) against the device's dense bf16 peak.

    python -m benchmarks.bench_training --device cuda --batch 4
    python -m benchmarks.bench_training --shape scale --device cuda --batch 32 --dtype bf16-autocast --compile
    python -m benchmarks.bench_training --tiny --device cpu          # smoke run on a tiny config
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from benchmarks.bench_inference import GEMMA2_2B, PEAK_BF16_TFLOPS, SIGLIP_SO400M, TINY_TEXT, TINY_VISION
from occvla_hf.evaluation.timing import call_times_ms, synchronize
from occvla_hf.experiments.ablation_scale import SCALE_RECIPE, SCALE_VAE_RECIPE
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE
from occvla_hf.processing.tokenization import SPECIAL_TOKENS
from occvla_hf.training.joint import attach_occupancy_vae, build_model_and_processor
from occvla_hf.training.recipe import load_recipe

TEXT_TOKENS = 64
ANSWER_TOKENS = 16
SHAPES = ("full", "scale", "tiny")
MODES = ("none", "grids", "latents")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "bf16-autocast": torch.float32}  # -> weight dtype
REPO_ROOT = Path(__file__).resolve().parents[1]


TINY_VAE = OccupancyVAEConfig(grid_shape=(32, 32, 4), block_channels=(8, 16), latent_channels=8, norm_num_groups=4)


def build_model(
    text: dict,
    vision: dict,
    vae_config: OccupancyVAEConfig,
    query_grid: tuple[int, int],
    device: torch.device,
    module: str = "lm_queries",
) -> OccVLAForPlanning:
    """A random 6-view OccVLA of the given text/vision shapes and occupancy `module` with a random frozen VAE, built
    on `device`."""
    config = OccVLAConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=text["vocab_size"] - 2,
        traj_token_id=text["vocab_size"] - 1,
        num_views=6,
        num_occupancy_queries_hw=query_grid,
        occupancy_latent_shape=vae_config.latent_shape,
        occupancy_module=module,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = OccVLAForPlanning(config)
        model.set_occupancy_vae(OccupancyVAE(vae_config))
    return model


def build_scale_model(
    device: torch.device, query_grid: tuple[int, int] | None = None, module: str | None = None
) -> OccVLAForPlanning:
    """The model of `configs/scale_joint.yaml` (random init, built by the joint stage's own builder) with a random
    frozen VAE of `configs/scale_vae.yaml`'s shape, on `device`; `query_grid` and `module` replace the recipe's query
    layout and occupancy module."""
    vae_config = OccupancyVAEConfig(**load_recipe(REPO_ROOT / SCALE_VAE_RECIPE)["model"])
    section = load_recipe(REPO_ROOT / SCALE_RECIPE)["model"]
    if query_grid is not None:
        section["config"]["num_occupancy_queries_hw"] = list(query_grid)
    if module is not None:
        section["config"]["occupancy_module"] = module
    torch.manual_seed(0)
    with torch.device(device):
        vae = OccupancyVAE(vae_config)
        model, _, _ = build_model_and_processor(section, vae)
        attach_occupancy_vae(model, vae)
    return model


def build_shape(
    shape: str, query_grid: tuple[int, int] | None, device: torch.device, module: str | None = None
) -> OccVLAForPlanning:
    """The benchmarked model of `shape` (one of `SHAPES`); `query_grid` / `module` None keep the shape's own query
    layout / occupancy module (`lm_queries` but for a recipe that says otherwise)."""
    if shape == "scale":
        return build_scale_model(device, query_grid, module)
    module = module or "lm_queries"
    if shape == "tiny":
        return build_model(TINY_TEXT, TINY_VISION, TINY_VAE, query_grid or (4, 4), device, module)
    return build_model(GEMMA2_2B, SIGLIP_SO400M, OccupancyVAEConfig(), query_grid or (10, 10), device, module)


def make_batch(model: OccVLAForPlanning, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
    """A random training batch with planning targets and occupancy grids (`occupancy`; `mode_inputs` picks the
    occupancy inputs of a mode)."""
    config = model.config
    image_tokens = config.num_views * config.image_seq_length
    # Text ids above the package tokenizer's special ids (the scale shape's image and <traj> ids are among them);
    # the other shapes put their image and <traj> ids at the end of the vocabulary.
    text = torch.randint(len(SPECIAL_TOKENS), 400, (batch, TEXT_TOKENS))
    text[:, TEXT_TOKENS - ANSWER_TOKENS - 1] = config.traj_token_id
    input_ids = torch.cat([torch.full((batch, image_tokens), config.image_token_id), text], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -ANSWER_TOKENS:] = input_ids[:, -ANSWER_TOKENS:]
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, -ANSWER_TOKENS:] = 1
    size = config.vision_config.image_size
    grid = model.occupancy_vae.config.grid_shape
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids, device=device),
        "token_type_ids": token_type_ids.to(device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(batch, config.num_views, 3, size, size, device=device, dtype=dtype),
        "ego_status": torch.randn(batch, config.ego_status_dim, device=device, dtype=dtype),
        "trajectory": torch.randn(batch, config.num_waypoints, 2, device=device, dtype=dtype),
        "occupancy": torch.randint(0, 18, (batch, *grid), device=device, dtype=torch.uint8),
        # a training step keeps no KV cache; left to the config's default (True), the mode without queries builds one
        # and, with activation checkpointing, warns inside the compiled LM (a graph break: the LM runs eager)
        "use_cache": False,
    }


def mode_inputs(model: OccVLAForPlanning, batch: dict, mode: str) -> dict:
    """The forward's keyword arguments for occupancy target `mode` (one of `MODES`). `latents` encodes the batch's
    grids once, here, as the latent cache does (frozen VAE, autocast off, kept as float32); like the training path it
    still passes the grids when the voxel loss (weight > 0) reads them."""
    inputs = {key: value for key, value in batch.items() if key != "occupancy"}
    if mode == "grids":
        inputs["occupancy"] = batch["occupancy"]
    elif mode == "latents":
        with torch.no_grad(), torch.autocast(batch["occupancy"].device.type, enabled=False):
            inputs["occupancy_latents"] = model.occupancy_vae.encode(batch["occupancy"]).float()
        if model.config.occupancy_voxel_loss_weight > 0:
            inputs["occupancy"] = batch["occupancy"]
    return inputs


def forward_flops(model: OccVLAForPlanning, seq: int, head_positions: int, with_occupancy: bool) -> dict[str, float]:
    """Matmul FLOPs of one sample's forward, by part: `vision` (the tower over every view), `projector`, `lm` (the
    LM's weights over `seq` positions, queries included), `lm_attention` (scores and values), `lm_head` (over
    `head_positions`) and `occupancy_head` (over the queries)."""
    config = model.config
    if config.occupancy_module != "lm_queries":
        raise ValueError(f"occupancy_module: the FLOP count covers 'lm_queries' only, got {config.occupancy_module!r}")
    vision, text = config.vision_config, config.text_config
    views = config.num_views
    patches = config.image_seq_length
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    vision_fwd = 2 * vision_params * patches + 4 * vision.num_hidden_layers * patches**2 * vision.hidden_size
    embed_params = model.get_input_embeddings().weight.numel()
    lm_params = sum(p.numel() for p in model.model.language_model.parameters()) - embed_params
    attn_width = text.num_attention_heads * text.head_dim
    occupancy_fwd = 0
    if with_occupancy:
        occupancy_fwd = config.num_occupancy_queries * 2 * sum(p.numel() for p in model.occupancy_head.parameters())
    return {
        "vision": views * vision_fwd,
        "projector": views * patches * 2 * vision.hidden_size * text.hidden_size,
        "lm": 2 * lm_params * seq,
        "lm_attention": 4 * text.num_hidden_layers * seq**2 * attn_width,
        "lm_head": 2 * text.hidden_size * text.vocab_size * head_positions,
        "occupancy_head": occupancy_fwd,
    }


def step_flops(model: OccVLAForPlanning, batch: int, with_occupancy: bool) -> float:
    """Matmul FLOPs of one training step on `make_batch` (forward + backward = 3 x forward; the LM head counted at
    every text position)."""
    config = model.config
    text_positions = config.num_views * config.image_seq_length + TEXT_TOKENS
    seq = text_positions + (config.num_occupancy_queries if with_occupancy else 0)
    return 3.0 * batch * sum(forward_flops(model, seq, text_positions, with_occupancy).values())


def make_step(
    model: OccVLAForPlanning, optimizer: torch.optim.Optimizer, inputs: dict, autocast: bool
) -> Callable[[], None]:
    """One training step on `inputs` (forward with keyword arguments, backward, optimizer step)."""
    device_type = inputs["input_ids"].device.type

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run(args: argparse.Namespace, model: OccVLAForPlanning) -> list[tuple[str, ...]]:
    """The table's rows: per activation-checkpointing setting, one row per occupancy target mode."""
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    model = model.to(dtype).train()
    if args.compile:  # fuse the eager norm/activation kernels of both towers; the glue stays eager
        # static shapes: the LM sees two sequence lengths (with and without the queries), each gets its own graph
        model.model.vision_tower.compile(dynamic=False)
        model.model.language_model.compile(dynamic=False)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda"
    )
    batch = make_batch(model, args.batch, device, dtype)
    inputs = {mode: mode_inputs(model, batch, mode) for mode in MODES}
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in _device_name(device)), None)
    rows = []
    for checkpointing in (False,) if args.no_checkpointing_rows else (False, True):
        if checkpointing:
            model.activation_checkpointing_enable()
        steps = {mode: make_step(model, optimizer, inputs[mode], args.dtype == "bf16-autocast") for mode in MODES}
        memory = {}
        for mode, step in steps.items():
            step()  # the first step allocates the optimizer states: keep them out of the comparison
            if device.type == "cuda":  # peak memory of one step of this mode, optimizer states included
                synchronize(device)
                torch.cuda.reset_peak_memory_stats()
                step()
                synchronize(device)
                memory[mode] = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"
        times = call_times_ms(list(steps.values()), repeats=args.repeats, warmup=args.warmup, device=device)
        medians = dict(zip(MODES, map(statistics.median, times), strict=True))
        busy = {}
        if device.type == "cuda" or (args.profile and not checkpointing):
            for mode, step in steps.items():
                profiler = _profile(step, device, args.repeats)
                if device.type == "cuda":
                    busy[mode] = f"{100 * _kernel_ms(profiler) / args.repeats / medians[mode]:.1f}"
                if args.profile and not checkpointing:
                    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
                    print(f"## profile: occupancy {mode}, {args.repeats} steps")
                    print(profiler.key_averages().table(sort_by=sort_key, row_limit=25, max_name_column_width=60))
        for mode in MODES:
            ms = medians[mode]
            with_occupancy = mode != "none"
            in_lm = model.config.occupancy_module == "lm_queries"  # the FLOP count covers this module only
            flops = step_flops(model, args.batch, with_occupancy) if in_lm else None
            queries = model.config.num_occupancy_queries if with_occupancy and in_lm else 0
            tokens = args.batch * (batch["input_ids"].shape[1] + queries)  # LM tokens
            rows.append(
                (
                    "on" if checkpointing else "off",
                    mode,
                    f"{ms:.1f}",
                    f"{100 * (ms / medians['none'] - 1):+.1f}%" if with_occupancy else "-",
                    busy.get(mode, "n/a"),
                    f"{tokens / (ms / 1000):.0f}",
                    memory.get(mode, "-"),
                    f"{100 * flops / (ms / 1000) / (peak * 1e12):.1f}" if peak and flops else "-",
                )
            )
    return rows


def _profile(step: Callable[[], None], device: torch.device, steps: int) -> torch.profiler.profile:
    """torch.profiler over `steps` calls of `step` (CPU activity, and CUDA kernels on CUDA)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronize(device)
    return profiler


def _kernel_ms(profiler: torch.profiler.profile) -> float:
    """Summed duration of the profiled CUDA kernels in ms (copies, memsets and GPU-side range annotations, which
    span idle gaps, are not kernels)."""
    kernels = (event for event in profiler.events() if _is_kernel(event))
    return sum(event.time_range.elapsed_us() for event in kernels) / 1000.0


def _is_kernel(event: object) -> bool:
    """A CUDA kernel event: `activity_type == "kernel"` (torch >= 2.12), else a CUDA-side event that is neither a
    user annotation nor a copy or memset (torch 2.11 has no `activity_type`)."""
    kind = getattr(event, "activity_type", None)
    if kind is not None:
        return kind == "kernel"
    return (
        event.device_type == torch.autograd.DeviceType.CUDA
        and not getattr(event, "is_user_annotation", False)
        and not event.name.startswith(("Memcpy", "Memset"))
    )


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="full", help="model shape (see the module docstring)")
    parser.add_argument("--tiny", dest="shape", action="store_const", const="tiny", help="same as --shape tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="bf16",
        help="bf16 / fp32 weights, or bf16-autocast: fp32 weights under bf16 autocast",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--query-grid",
        type=int,
        nargs=2,
        default=None,
        metavar=("ROWS", "COLS"),
        help="occupancy query layout (must divide the VAE latent; default: the shape's own)",
    )
    parser.add_argument(
        "--occupancy-module",
        choices=["lm_queries", "cross_attention"],
        default=None,
        help="where the occupancy queries run (default: the shape's own; MFU is counted for lm_queries only)",
    )
    parser.add_argument("--profile", action="store_true", help="print a kernel-time table per mode")
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower and the LM")
    parser.add_argument("--no-checkpointing-rows", action="store_true", help="skip the activation-checkpointing rows")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build_shape(args.shape, tuple(args.query_grid) if args.query_grid else None, device, args.occupancy_module)
    config = model.config
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    query_rows, query_cols = config.num_occupancy_queries_hw
    print(
        f"# device {_device_name(device)}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.dtype}, shape {args.shape} ({trained / 1e6:.1f} M trained parameters), batch {args.batch}, "
        f"{config.num_views} views x {config.image_seq_length} image tokens, {TEXT_TOKENS} text tokens, occupancy "
        f"queries {query_rows}x{query_cols} ({config.occupancy_module}), VAE latent {'x'.join(map(str, config.occupancy_latent_shape))}"
        f"{', torch.compile' if args.compile else ''}"
    )
    rows = run(args, model)  # prints the --profile tables
    header = ("act. ckpt", "occupancy", "step ms", "vs none", "GPU busy %", "tokens/s", "peak GiB", "MFU %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
