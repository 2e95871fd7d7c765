"""Occupancy VAE throughput on full Occ3D grids (200 x 200 x 16 -> latent 128 x 50 x 50, default config).

Rows per latent type and batch size: `encode`, `decode`, `encode+decode` (no grad, the frozen use inside OccVLA)
and, with `--train`, one stage-1 training step (forward with both losses, backward, AdamW step). Inference runs the
model cast to `--dtype`; the training step keeps fp32 weights under bf16 autocast, as the Trainer's `bf16=True`
does. Each number is the median of `--repeats` runs after `--warmup` runs (`occvla_hf.evaluation.timing`).

    python benchmarks/bench_vae.py --device cpu --batch-sizes 1 2
    python benchmarks/bench_vae.py --device cuda --dtype bf16 --batch-sizes 1 8 32 --train
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import torch
import transformers

from occvla_hf.constants import NUM_OCC_CLASSES, OCC_GRID_SHAPE
from occvla_hf.evaluation.timing import call_times_ms
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.occupancy_vae import OccupancyVAE

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median milliseconds of `fn()`."""
    return statistics.median(call_times_ms([fn], repeats=repeats, warmup=warmup, device=device)[0])


def bench_inference(
    config: OccupancyVAEConfig, batch_size: int, device: torch.device, dtype: torch.dtype, warmup: int, repeats: int
) -> dict[str, float]:
    model = OccupancyVAE(config).to(device=device, dtype=dtype).eval()
    voxels = torch.randint(0, NUM_OCC_CLASSES, (batch_size, *OCC_GRID_SHAPE), dtype=torch.uint8, device=device)
    with torch.no_grad():
        latent = model.encode(voxels)
        return {
            "encode": median_ms(lambda: model.encode(voxels), device, warmup, repeats),
            "decode": median_ms(lambda: model.decode(latent), device, warmup, repeats),
            "encode+decode": median_ms(lambda: model.decode(model.encode(voxels)), device, warmup, repeats),
        }


def bench_train_step(
    config: OccupancyVAEConfig, batch_size: int, device: torch.device, dtype: torch.dtype, warmup: int, repeats: int
) -> float:
    model = OccupancyVAE(config).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    voxels = torch.randint(0, NUM_OCC_CLASSES, (batch_size, *OCC_GRID_SHAPE), dtype=torch.uint8, device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(voxels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return median_ms(step, device, warmup, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latent-types", nargs="+", choices=["vq", "kl"], default=["vq", "kl"])
    parser.add_argument("--train", action="store_true", help="also time a training step (forward, backward, AdamW)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device {device} ({name}), dtype {args.dtype}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, CPU threads {torch.get_num_threads()}"
    )
    header = "| latent | batch | params (M) | encode ms | decode ms | encode+decode ms | grids / s |"
    if args.train:
        header += " train step ms | train grids / s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for latent_type in args.latent_types:
        config = OccupancyVAEConfig(latent_type=latent_type)
        num_params = sum(p.numel() for p in OccupancyVAE(config).parameters()) / 1e6
        for batch_size in args.batch_sizes:
            times = bench_inference(config, batch_size, device, dtype, args.warmup, args.repeats)
            row = (
                f"| {latent_type} | {batch_size} | {num_params:.2f} | {times['encode']:.1f} | {times['decode']:.1f} "
                f"| {times['encode+decode']:.1f} | {1000.0 * batch_size / times['encode+decode']:.2f} |"
            )
            if args.train:
                step_ms = bench_train_step(config, batch_size, device, dtype, args.warmup, args.repeats)
                row += f" {step_ms:.1f} | {1000.0 * batch_size / step_ms:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
