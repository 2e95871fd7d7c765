"""Run-to-run reproducibility of stage-2 training: the same recipe and seed trained twice, with and without
`training.full_determinism` (transformers' `enable_full_determinism`: deterministic torch algorithms, cuDNN and
cuBLAS settings), as separate `occvla-hf train joint` processes one after the other.

Prints, per setting, the largest absolute difference between the two runs' final weights, the largest difference of
their logged losses, and the training wall time of each run (from `trainer_state.json`'s `train_runtime`).

    python -m benchmarks.bench_determinism --data DATA/train --vae VAE_DIR --steps 100
    python -m benchmarks.bench_determinism --data DATA/train --vae VAE_DIR --steps 2 \
        --recipe-overrides "--training.use_cpu true --training.bf16 false --training.dataloader_num_workers 0"
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

RECIPE: str = "configs/embedded_joint.yaml"


def train(out_dir: Path, args: argparse.Namespace, full_determinism: bool) -> dict:
    """One `occvla-hf train joint` run; returns its trainer state."""
    command = [
        sys.executable, "-m", "occvla_hf.cli", "train", "joint", "--config", RECIPE,
        "--occupancy_vae", args.vae, "--data.path", args.data, "--training.output_dir", str(out_dir),
        "--training.max_steps", str(args.steps), "--training.logging_steps", str(min(10, args.steps)),
        "--training.seed", "0", "--training.full_determinism", str(full_determinism).lower(),
        *shlex.split(args.recipe_overrides),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out_dir / "trainer_state.json").read_text())


def max_weight_difference(first: Path, second: Path) -> float:
    weights_a, weights_b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    return max((weights_a[name].float() - weights_b[name].float()).abs().max().item() for name in weights_a)


def max_loss_difference(state_a: dict, state_b: dict) -> float:
    losses = [[entry["loss"] for entry in state["log_history"] if "loss" in entry] for state in (state_a, state_b)]
    return max(abs(a - b) for a, b in zip(*losses, strict=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="training dataset folder (`occvla-hf data build` layout)")
    parser.add_argument("--vae", required=True, help="stage-1 VAE folder")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", default="runs/determinism", help="where the checkpoints are written")
    parser.add_argument("--recipe-overrides", default="", help="e.g. '--training.use_cpu true --training.bf16 false'")
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.steps} steps of {RECIPE}, seed 0, each setting trained twice")  # fmt: skip
    print("| full_determinism | max abs weight difference | max abs loss difference | train time run 1 / 2 (s) |")
    print("|---|---|---|---|")
    for full_determinism in (False, True):
        dirs = [Path(args.runs) / f"determinism_{full_determinism}_{run}" for run in (1, 2)]
        states = [train(out_dir, args, full_determinism) for out_dir in dirs]
        runtimes = " / ".join(
            f"{next(e for e in reversed(state['log_history']) if 'train_runtime' in e)['train_runtime']:.1f}"
            for state in states
        )
        print(f"| {full_determinism} | {max_weight_difference(*dirs):.3g} | {max_loss_difference(*states):.3g} | "
              f"{runtimes} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
