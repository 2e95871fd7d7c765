"""Multi-GPU stage-2 training with `OccVLATrainer` (DDP or FSDP through accelerate): loss curve and throughput.

Random weights, synthetic planning samples made on the fly (6 views, a fixed-length prompt ending in `<traj>`, a
meta-action-like answer, waypoints that follow the ego status, structured 200 x 200 x 16 occupancy grids through a
random default-size occupancy VAE), every loss term on, fp32 master weights with bf16 autocast, AdamW, the
recipe's `TrainingArguments`. Presets: `small` (SigLIP-B-sized tower at 224 px, an 8-layer 1024-wide Gemma with the
Gemma-2 vocabulary, about 0.5 B parameters), `full` (PaliGemma-2-3B shapes), `tiny` (CPU smoke run). Prints the
logged loss terms per step and, after `--warmup-steps`, the median step time, samples/s, tokens/s and peak memory.

    accelerate launch --config_file configs/accelerate/fsdp.yaml -m benchmarks.bench_training_fsdp --preset small
    accelerate launch --config_file configs/accelerate/ddp.yaml -m benchmarks.bench_training_fsdp --preset small
    python -m benchmarks.bench_training_fsdp --preset tiny --steps 20 --cpu      # smoke run, one CPU process
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
import transformers
from torch.utils.data import Dataset
from transformers import PrinterCallback, TrainerCallback, TrainingArguments

from benchmarks.bench_inference import GEMMA2_2B, SIGLIP_SO400M, TINY_TEXT, TINY_VISION
from benchmarks.bench_training import TINY_VAE, build_model
from occvla_hf.constants import OCC_FREE_CLASS
from occvla_hf.evaluation.timing import synchronize
from occvla_hf.modeling import OccVLAConfig, OccVLAForPlanning
from occvla_hf.modeling.configuration_occupancy_vae import OccupancyVAEConfig
from occvla_hf.modeling.loss import LOSS_TERMS
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.trainer import OccVLATrainer

PROMPT_TOKENS = 48
SMALL_TEXT = dict(GEMMA2_2B, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=128)  # fmt: skip
SMALL_VISION = dict(SIGLIP_SO400M, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12)  # fmt: skip
PRESETS: dict[str, tuple[dict, dict, OccupancyVAEConfig, tuple[int, int]]] = {
    "tiny": (TINY_TEXT, TINY_VISION, TINY_VAE, (4, 4)),
    "small": (SMALL_TEXT, SMALL_VISION, OccupancyVAEConfig(), (10, 10)),
    "full": (GEMMA2_2B, SIGLIP_SO400M, OccupancyVAEConfig(), (10, 10)),
}  # fmt: skip
GROUND_CLASS, CAR_CLASS = 11, 4


def build_preset(preset: str) -> OccVLAForPlanning:
    text, vision, vae_config, query_grid = PRESETS[preset]
    return build_model(text, vision, vae_config, query_grid, torch.device("cpu"))


class SyntheticPlanningSamples(Dataset):
    """Processed planning samples, each a deterministic function of its index (nothing is held in memory)."""

    def __init__(self, config: OccVLAConfig, grid_shape: tuple[int, int, int], length: int) -> None:
        self.config, self.grid_shape, self.length = config, tuple(grid_shape), length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        config = self.config
        generator = torch.Generator().manual_seed(index)
        image_ids = torch.full((config.num_views * config.image_seq_length,), config.image_token_id)
        prompt = torch.randint(20, 500, (PROMPT_TOKENS,), generator=generator)  # every preset has >= 512 tokens
        prompt[-1] = config.traj_token_id
        answer = torch.tensor([10 + index % 4, 15 + index % 5, 1])  # "<speed>, <path>" + eos
        input_ids = torch.cat([image_ids, prompt, answer])
        prefix = len(input_ids) - len(answer)
        ego_status = torch.randn(config.ego_status_dim, generator=generator)
        steps = torch.arange(1, config.num_waypoints + 1, dtype=torch.float32).unsqueeze(-1)
        occupancy = torch.full(self.grid_shape, OCC_FREE_CLASS, dtype=torch.uint8)
        occupancy[..., 0] = GROUND_CLASS
        x = index % (self.grid_shape[0] // 2)
        occupancy[x : x + self.grid_shape[0] // 8, : self.grid_shape[1] // 8, 1:3] = CAR_CLASS
        size = config.vision_config.image_size
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": (torch.arange(len(input_ids)) >= prefix).long(),
            "labels": torch.where(torch.arange(len(input_ids)) >= prefix, input_ids, -100),
            "pixel_values": torch.randn(config.num_views, 3, size, size, generator=generator),
            "ego_status": ego_status,
            "trajectory": steps * torch.stack([2.0 + 3.0 * ego_status[0].abs(), 0.3 * ego_status[1]]),
            "trajectory_mask": torch.ones(config.num_waypoints, dtype=torch.bool),
            "occupancy": occupancy,
        }


class StepTimer(TrainerCallback):
    """Wall-clock time at the end of every optimiser step (after the device finished it)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        synchronize(args.device)
        self.ends.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--workers", type=int, default=4, help="data loader workers per process")
    parser.add_argument("--cpu", action="store_true", help="fp32 on the CPU (smoke run)")
    args = parser.parse_args()

    model = build_preset(args.preset)
    vae_grid = model.occupancy_vae.config.grid_shape
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=args.grad_accum,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            bf16=not args.cpu,
            use_cpu=args.cpu,
            activation_checkpointing=args.activation_checkpointing,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            dataloader_num_workers=args.workers,
            ddp_find_unused_parameters=False,  # every step trains every head
            disable_tqdm=True,
            seed=0,
        )
        world = training_args.world_size
        samples = args.steps * args.batch * args.grad_accum * world
        timer = StepTimer()
        trainer = OccVLATrainer(
            model=model,
            args=training_args,
            train_dataset=SyntheticPlanningSamples(model.config, vae_grid, samples),
            data_collator=OccVLADataCollator(pad_token_id=0),
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # the tables below replace the raw log lines
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.train()
        peak_gib = torch.tensor(
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
            device=trainer.args.device,
        )
        peak_gib = float(trainer.accelerator.gather(peak_gib.reshape(1)).max())
        if not trainer.is_world_process_zero():
            return
        _report(args, trainer, timer, start, peak_gib, model)


def _report(args, trainer: OccVLATrainer, timer: StepTimer, start: float, peak_gib: float, model) -> None:
    world = trainer.args.world_size
    distributed = trainer.accelerator.distributed_type.value
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    seq = model.config.num_views * model.config.image_seq_length + PROMPT_TOKENS + 3
    print(
        f"# {args.preset}: {parameters / 1e6:.0f} M trainable parameters, {world} x {device} ({distributed}), "
        f"torch {torch.__version__}, transformers {transformers.__version__}, per-device batch {args.batch}, "
        f"grad. accumulation {args.grad_accum}, {seq} tokens + {model.config.num_occupancy_queries} occupancy "
        f"queries per sample, {'fp32' if args.cpu else 'bf16 autocast'}, activation checkpointing "
        f"{'on' if args.activation_checkpointing else 'off'}"
    )
    columns = ("loss", *LOSS_TERMS[:3], "grad_norm")
    print("\n| step | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 1))
    for entry in trainer.state.log_history:
        if "loss" in entry:
            values = " | ".join(f"{entry[name]:.4f}" if name in entry else "-" for name in columns)
            print(f"| {entry['step']} | {values} |")
    durations = [b - a for a, b in zip(timer.ends, timer.ends[1:])][max(args.warmup_steps - 1, 0) :]
    step_s = statistics.median(durations) if durations else float("nan")
    global_batch = args.batch * args.grad_accum * world
    print(
        "\n| processes | global batch | median step s | samples/s | tokens/s | peak GiB/device | wall s |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {world} | {global_batch} | {step_s:.3f} | {global_batch / step_s:.2f} | {global_batch * seq / step_s:.0f} "
        f"| {peak_gib:.1f} | {time.perf_counter() - start:.1f} |"
    )


if __name__ == "__main__":
    main()
