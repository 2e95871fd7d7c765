"""Training-step cost of occupancy supervision: step time, tokens/s, peak memory and MFU, with and without the
occupancy queries, with activation checkpointing off and on.

Full shape: PaliGemma-2-3B (SigLIP-So400m/14 at 224 px, Gemma-2-2B) with 6 camera views (1536 image tokens) and a
64-token prompt + answer, the default 10 x 10 occupancy queries and the default occupancy VAE (200 x 200 x 16 grid,
latent 128 x 50 x 50), bf16 weights, fused AdamW, SDPA. MFU counts the matmul FLOPs of the forward and backward of
everything the step computes (vision tower, projector, LM with its attention, LM head, occupancy head; 3x forward)
against the device's dense bf16 peak.

    python benchmarks/bench_training.py --device cuda --batch 4
    python benchmarks/bench_training.py --tiny --device cpu          # smoke run on a tiny config
"""

from __future__ import annotations

import argparse

import torch
import transformers

from benchmarks.bench_inference import GEMMA2_2B, SIGLIP_SO400M, TINY_TEXT, TINY_VISION, Timer
from occvla_hf.evaluation.timing import synchronize
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE

TEXT_TOKENS = 64
ANSWER_TOKENS = 16
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense, SXM


TINY_VAE = OccupancyVAEConfig(grid_shape=(32, 32, 4), block_channels=(8, 16), latent_channels=8, norm_num_groups=4)


def build_model(
    text: dict, vision: dict, vae_config: OccupancyVAEConfig, query_grid: tuple[int, int], device: torch.device
) -> OccVLAForPlanning:
    """A random 6-view OccVLA of the given text/vision shapes with a random frozen VAE, built on `device`."""
    config = OccVLAConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=text["vocab_size"] - 2,
        traj_token_id=text["vocab_size"] - 1,
        num_views=6,
        num_occupancy_queries_hw=query_grid,
        occupancy_latent_shape=vae_config.latent_shape,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = OccVLAForPlanning(config)
        model.set_occupancy_vae(OccupancyVAE(vae_config))
    return model


def make_batch(model: OccVLAForPlanning, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
    config = model.config
    image_tokens = config.num_views * config.image_seq_length
    text = torch.randint(2, 400, (batch, TEXT_TOKENS))
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
    }


def step_flops(model: OccVLAForPlanning, batch: int, with_occupancy: bool) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3 x forward)."""
    config = model.config
    vision, text = config.vision_config, config.text_config
    views = config.num_views
    patches = config.image_seq_length
    vision_params = sum(p.numel() for p in model.model.vision_tower.parameters())
    vision_fwd = 2 * vision_params * patches + 4 * vision.num_hidden_layers * patches**2 * vision.hidden_size
    vision_fwd *= batch * views
    seq = views * patches + TEXT_TOKENS + (config.num_occupancy_queries if with_occupancy else 0)
    embed_params = model.get_input_embeddings().weight.numel()
    lm_params = sum(p.numel() for p in model.model.language_model.parameters()) - embed_params
    attn_width = text.num_attention_heads * text.head_dim
    lm_fwd = batch * (2 * lm_params * seq + 4 * text.num_hidden_layers * seq**2 * attn_width)
    text_positions = views * patches + TEXT_TOKENS
    head_fwd = batch * 2 * text.hidden_size * text.vocab_size * text_positions
    projector_fwd = batch * views * patches * 2 * vision.hidden_size * text.hidden_size
    occupancy_fwd = 0
    if with_occupancy:
        occupancy_fwd = batch * config.num_occupancy_queries * 2 * sum(
            p.numel() for p in model.occupancy_head.parameters()
        )
    return 3.0 * (vision_fwd + lm_fwd + head_fwd + projector_fwd + occupancy_fwd)


def run(args: argparse.Namespace) -> list[tuple[str, ...]]:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if args.tiny:
        model = build_model(TINY_TEXT, TINY_VISION, TINY_VAE, (4, 4), device)
    else:
        model = build_model(GEMMA2_2B, SIGLIP_SO400M, OccupancyVAEConfig(), tuple(args.query_grid), device)
    model = model.to(dtype).train()
    if args.compile:  # fuse the eager norm/activation kernels of both towers; the glue stays eager
        model.model.vision_tower.compile()
        model.model.language_model.compile()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda"
    )
    batch = make_batch(model, args.batch, device, dtype)
    timer = Timer(device, args.warmup, args.repeats)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in _device_name(device)), None)
    rows = []
    for checkpointing in (False,) if args.no_checkpointing_rows else (False, True):
        if checkpointing:
            model.activation_checkpointing_enable()
        steps, memory = {}, {}
        for with_occupancy in (False, True):
            inputs = batch if with_occupancy else {k: v for k, v in batch.items() if k != "occupancy"}

            def step(inputs: dict = inputs) -> None:
                model(**inputs).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            steps[with_occupancy] = step
            step()  # the first step allocates the optimizer states: keep them out of the comparison
            if device.type == "cuda":  # peak memory of one step of this variant, optimizer states included
                synchronize(device)
                torch.cuda.reset_peak_memory_stats()
                step()
                synchronize(device)
                memory[with_occupancy] = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"
        times = dict(zip((False, True), timer.pair(steps[False], steps[True]), strict=True))
        if args.profile and not checkpointing:
            for with_occupancy in (False, True):
                print(f"## profile: occupancy={'yes' if with_occupancy else 'no'}")
                print(_profile(steps[with_occupancy], device))
        for with_occupancy in (False, True):
            ms = times[with_occupancy]
            flops = step_flops(model, args.batch, with_occupancy)
            queries = model.config.num_occupancy_queries if with_occupancy else 0
            tokens = args.batch * (batch["input_ids"].shape[1] + queries)
            rows.append((
                "on" if checkpointing else "off",
                "yes" if with_occupancy else "no",
                f"{ms:.1f}",
                f"{100 * (ms / times[False] - 1):+.1f}%" if with_occupancy else "-",
                f"{tokens / (ms / 1000):.0f}",
                memory.get(with_occupancy, "-"),
                f"{100 * flops / (ms / 1000) / (peak * 1e12):.1f}" if peak else "-",
            ))
    return rows


def _profile(step, device: torch.device, rows: int = 25) -> str:
    """Kernel-time table of one step, to see where the occupancy path spends its time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        step()
        synchronize(device)
    sort_key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_key, row_limit=rows, max_name_column_width=60)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random config (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--query-grid", type=int, nargs=2, default=[10, 10], metavar=("ROWS", "COLS"),
                        help="occupancy query layout (must divide the 50 x 50 latent)")
    parser.add_argument("--profile", action="store_true", help="print a kernel-time table per variant")
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower and the LM")
    parser.add_argument("--no-checkpointing-rows", action="store_true", help="skip the activation-checkpointing rows")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"# device {_device_name(torch.device(args.device))}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {args.dtype}, {'tiny' if args.tiny else 'PaliGemma-2-3B shape'}, batch "
          f"{args.batch}, 6 views, {TEXT_TOKENS} text tokens, occupancy queries {args.query_grid[0]}x"
          f"{args.query_grid[1]}{', torch.compile' if args.compile else ''}")
    header = ("act. ckpt", "occupancy", "step ms", "occ. overhead", "tokens/s", "peak GiB", "MFU %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in run(args):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
