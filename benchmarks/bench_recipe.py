"""The shipped joint recipe (`configs/joint.yaml`) end to end at the PaliGemma-2-3B shape, with random weights: what
each training mode costs (peak memory, step time, tokens/s, MFU), a checkpoint and its resume, and planning + QA
evaluation of the result.

Steps (all under `--work`):
1. `checkpoint`: a random PaliGemma-2 checkpoint saved in bf16 with the package tokenizer and a SigLIP image
   processor. `paligemma2-3b`: SigLIP-So400m/14 at 224 px and Gemma-2-2B text layers (soft-capping, sliding window)
   with the real 257216-token embedding (`benchmarks.bench_inference`'s shapes); `tiny`: the same layers, tiny.
2. `data`: the sim's `tiny` preset (2 scenes; `occvla-hf sim`) built by `occvla-hf data build nuscenes`, and a random
   frozen occupancy VAE of `configs/vae.yaml`'s shape (tiny widths for `tiny`). Nothing here is stage-1 trained: the
   VAE only fixes the shape of the occupancy targets.
3. one subprocess per mode (peak memory per mode), each `train_joint` of the shipped recipe with only the overrides
   of `recipe_overrides` (model, VAE, data, steps, output, workers, evaluation off): `full` (LM + heads + projector
   trained, vision tower frozen as shipped, activation checkpointing off), `act_ckpt` (the same with it on, as
   shipped; it also saves the checkpoint at step N/2 unless `--no-resume`), `lora` (the recipe's `lora` section set
   to `LORA`, its dropout `--lora-dropout`). `--lm-attention` sets the recipe's `model.attn_implementation` (the
   language model's kernel; the vision tower keeps SDPA). Batch size and gradient accumulation are the recipe's
   (4 x 4) unless `--batch`/`--grad-accum` say otherwise.
4. `resume`: the `act_ckpt` run resumed from its step-N/2 checkpoint to step N; its global step and the loss of the
   first resumed step against the uninterrupted run's. Then `occvla-hf eval planning` and `eval qa` of the resumed
   model on the val split (random weights: the numbers only show that the path runs).

Measured per mode: peak memory (`torch.cuda.max_memory_allocated` over the whole run; n/a off CUDA), the median
optimiser-step time (between consecutive `on_step_end`s, synchronised, after `WARMUP_STEPS`; data loading included,
as the recipe runs it), tokens/s (non-padding tokens of the step's batches, image tokens included, per median step),
trainable parameters, and MFU: matmul FLOPs of the real tokens of each step (`bench_training.forward_flops` per
sample; no padding, no recomputation) over the median step time and the dense bf16 peak of `PEAK_BF16_TFLOPS`.
Counted: the frozen vision tower's forward only (1x); the projector forward + weight gradient (2x) when trained,
forward only under LoRA; the LM weights 3x when trained, and under LoRA forward + input gradient (2x) plus the
adapters 3x; attention scores/values 3x; the LM head over the supervised positions (the loss runs it there only),
3x trained, 2x frozen; the occupancy head 3x on planning batches. Not counted: the frozen VAE's encode, the
trajectory head, norms and activations. Activation checkpointing's recomputed forward is not counted (it lowers the
MFU of `act_ckpt`: that is its cost).

    python benchmarks/bench_recipe.py --preset tiny --work /tmp/recipe_tiny                     # CPU smoke run
    python benchmarks/bench_recipe.py --preset paligemma2-3b --work /tmp/recipe --json recipe.json
    python benchmarks/bench_recipe.py --preset paligemma2-3b --work /tmp/recipe --no-resume --modes full lora \
        --lm-attention flex_attention --lora-dropout 0     # Gemma-2 in flex attention (CUDA); LoRA without dropout
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.initialization import no_init_weights

if __package__ in (None, ""):  # run as a script: the repository root goes on the path, for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_inference import (
    GEMMA2_2B,
    GEMMA2_LAYERS,
    PEAK_BF16_TFLOPS,
    SIGLIP_SO400M,
    TINY_TEXT,
    TINY_VISION,
    lm_attention,
)
from benchmarks.bench_training import forward_flops

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "configs" / "joint.yaml"
VAE_RECIPE = REPO_ROOT / "configs" / "vae.yaml"
MODES = ("full", "act_ckpt", "lora")
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}  # the example of configs/joint.yaml's `lora` comment
WARMUP_STEPS = 3  # optimiser steps left out of the median (allocation, cudnn/cublas autotuning)
SIM_PRESET, SIM_VERSION = "tiny", "v1.0-mini"
TRAIN_SPLIT, EVAL_SPLIT = "mini_train", "mini_val"
EVAL_ROWS_BATCH = 4
# Tiny widths of the VAE of configs/vae.yaml (the same 200 x 200 x 16 grid and 50 x 50 latent).
TINY_VAE = dict(class_embedding_dim=2, block_channels=[4, 4, 4], num_res_blocks=1, norm_num_groups=2, latent_channels=4)
PRESETS = {"tiny": (TINY_TEXT, TINY_VISION), "paligemma2-3b": (GEMMA2_2B, SIGLIP_SO400M)}


# ------------------------------------------------------------------------------------------------- inputs


def paligemma_config(preset: str, tokenizer) -> transformers.PaliGemmaConfig:
    """PaliGemma-2 of `preset`: SigLIP + Gemma-2 layers; the tiny vocabulary is the package tokenizer's, the full
    one Gemma's (larger than the tokenizer, as PaliGemma's embedding is)."""
    text, vision = PRESETS[preset]
    text = {**text, **GEMMA2_LAYERS}
    if preset == "tiny":
        text["vocab_size"] = len(tokenizer)
    return transformers.PaliGemmaConfig(
        vision_config={**vision, "projection_dim": text["hidden_size"]},
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        projection_dim=text["hidden_size"],
    )


def build_checkpoint(preset: str, path: Path) -> dict[str, float]:
    """Saves a random bf16 PaliGemma-2 of `preset` with the package tokenizer (`save_random_paligemma`)."""
    from occvla_hf.processing import build_tokenizer

    tokenizer = build_tokenizer()
    return save_random_paligemma(paligemma_config(preset, tokenizer), tokenizer, path)


def save_random_paligemma(config: transformers.PaliGemmaConfig, tokenizer, path: Path) -> dict[str, float]:
    """Saves a random bf16 PaliGemma of `config` with `tokenizer` and a SigLIP image processor; seconds of the build
    and of the save. The weights are drawn directly in bf16 (normal, std 0.02; norms and biases at their defaults),
    skipping transformers' float32 initialisation; the LM head is tied to the embedding, as PaliGemma's is."""
    start = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no float32 copy of 3B weights
    try:
        with no_init_weights():
            model = transformers.PaliGemmaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.tie_weights()  # as in a real checkpoint: one tensor for the embedding and the LM head, drawn and saved once
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.02)
            elif "norm" in name and "weight" in name:  # Gemma's RMSNorm scales by 1 + weight, SigLIP's by weight
                parameter.fill_(0.0 if "language_model" in name else 1.0)
            else:
                parameter.zero_()
    built = time.perf_counter()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    size = config.vision_config.image_size
    transformers.SiglipImageProcessorPil(size={"height": size, "width": size}).save_pretrained(path)
    return {"build_s": built - start, "save_s": time.perf_counter() - built}


def build_vae(preset: str, path: Path) -> None:
    """A random occupancy VAE of `configs/vae.yaml`'s model section (tiny widths for `tiny`), saved to `path`."""
    from occvla_hf.modeling import OccupancyVAE, OccupancyVAEConfig
    from occvla_hf.training.recipe import load_recipe

    section = load_recipe(VAE_RECIPE)["model"]
    torch.manual_seed(0)
    OccupancyVAE(OccupancyVAEConfig(**{**section, **(TINY_VAE if preset == "tiny" else {})})).save_pretrained(path)


def build_data(work: Path) -> Path:
    """The sim's `tiny` preset, built like `occvla-hf data build nuscenes` (the package's dataset format)."""
    sim, data = work / "sim", work / "data"
    cli = [sys.executable, "-m", "occvla_hf.cli"]
    subprocess.run([*cli, "sim", "--preset", SIM_PRESET, "--out", str(sim), "--overwrite"], check=True)
    build = ["data", "build", "nuscenes", "--dataroot", str(sim), "--version", SIM_VERSION]
    build += ["--occ3d", str(sim / "gts"), "--qa", str(sim / "nuscenes_qa"), "--out", str(data)]
    subprocess.run([*cli, *build], check=True)
    return data


def recipe_overrides(args: argparse.Namespace, mode: str, output_dir: Path, max_steps: int) -> list[str]:
    """`--section.key VALUE` overrides of the shipped recipe for one run of `mode`."""
    on_cuda = torch.cuda.is_available()
    overrides = {
        "model.from_vlm": args.work / "paligemma",
        "occupancy_vae": args.work / "vae",
        "data.path": args.work / "data",
        "data.train_split": TRAIN_SPLIT,
        "data.eval_split": "null",  # evaluation off during training (and no final evaluation)
        "training.output_dir": output_dir,
        "training.max_steps": max_steps,
        "training.logging_steps": 1,  # the loss of every step (the resume check reads it)
        "training.eval_strategy": "no",
        "training.load_best_model_at_end": "false",  # needs evaluation
        "training.save_strategy": "steps" if mode == "act_ckpt" and not args.no_resume else "no",
        "training.save_steps": args.steps // 2,
        "training.dataloader_num_workers": args.workers,
        "training.activation_checkpointing": "false" if mode == "full" else "true",
        "training.disable_tqdm": "true",
    }
    if mode == "lora":
        overrides["lora"] = json.dumps({**LORA, "lora_dropout": args.lora_dropout})
    if args.lm_attention is not None:
        overrides["model.attn_implementation"] = json.dumps(lm_attention(args.lm_attention))
    if args.batch is not None:
        overrides["training.per_device_train_batch_size"] = args.batch
    if args.grad_accum is not None:
        overrides["training.gradient_accumulation_steps"] = args.grad_accum
    if not on_cuda:
        overrides.update({"training.bf16": "false", "training.use_cpu": "true"})
    return [token for key, value in overrides.items() for token in (f"--{key}", str(value))]


# ------------------------------------------------------------------------------------------------- worker


class StepRecorder(transformers.TrainerCallback):
    """Per optimiser step: the wall time between consecutive step ends (synchronised), and per sample of its
    micro-batches the real tokens, supervised positions and occupancy flag (a forward pre-hook on the model); the
    trainable and LoRA adapter parameter counts."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, int, bool]] = []  # (tokens, supervised positions, occupancy) of the step
        self.steps: list[dict[str, Any]] = []
        self.trainable = self.adapters = 0
        self._last = 0.0

    def _record(self, module, args, kwargs) -> None:
        if not module.training:
            return
        occupancy = kwargs.get("occupancy") is not None or kwargs.get("occupancy_latents") is not None
        tokens = kwargs["attention_mask"].sum(dim=1).tolist()
        labels = kwargs.get("labels")
        supervised = (labels[:, 1:] != -100).sum(dim=1).tolist() if labels is not None else [0] * len(tokens)
        self.samples += [(t, s, occupancy) for t, s in zip(tokens, supervised, strict=True)]

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the OccVLA inside
        base.register_forward_pre_hook(self._record, with_kwargs=True)
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.adapters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
        self._last = self._now()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        now = self._now()
        self.steps.append({"step": state.global_step, "seconds": now - self._last, "samples": self.samples})
        self.samples, self._last = [], now

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()


def sample_multipliers(mode: str) -> dict[str, float]:
    """Forward multiples of each part of `forward_flops` in a training step of `mode` (see the module docstring)."""
    trained = mode != "lora"
    return {
        "vision": 1.0,
        "projector": 2.0 if trained else 1.0,
        "lm": 3.0 if trained else 2.0,
        "lm_attention": 3.0,
        "lm_head": 3.0 if trained else 2.0,
        "occupancy_head": 3.0,
    }


def step_flops(model, samples: list[tuple[int, int, bool]], mode: str, adapter_params: int) -> float:
    """Matmul FLOPs of one optimiser step over its real samples (tokens, supervised positions, occupancy)."""
    multipliers = sample_multipliers(mode)
    total = 0.0
    for tokens, supervised, occupancy in samples:
        seq = tokens + (model.config.num_occupancy_queries if occupancy else 0)
        parts = forward_flops(model, seq, supervised, occupancy)
        total += sum(multipliers[name] * value for name, value in parts.items())
        total += 3.0 * 2 * adapter_params * seq  # LoRA adapters (0 otherwise)
    return total


def worker(args: argparse.Namespace) -> None:
    """One training run of the shipped recipe (`--run-mode`), its measurements written to `--result`."""
    from occvla_hf.training.joint import train_joint
    from occvla_hf.training.recipe import load_recipe

    mode = args.run_mode
    recipe = load_recipe(RECIPE, args.overrides, stage="joint")
    result: dict[str, Any] = {"mode": mode}
    recorder = StepRecorder()
    start = time.perf_counter()
    try:
        run = train_joint(recipe, callbacks=[recorder])
    except torch.OutOfMemoryError as error:
        result["error"] = f"out of memory: {str(error).splitlines()[0]}"
        Path(args.result).write_text(json.dumps(result))
        return
    result["total_s"] = time.perf_counter() - start
    steps = recorder.steps
    timed = steps[WARMUP_STEPS:] if len(steps) > WARMUP_STEPS else steps
    median_s = statistics.median(step["seconds"] for step in timed)
    model = run.model  # LoRA merged: the parameter counts of forward_flops are the base model's
    flops = statistics.median(step_flops(model, step["samples"], mode, recorder.adapters) for step in timed)
    tokens = statistics.median(sum(t for t, _, _ in step["samples"]) for step in timed)
    losses = {entry["step"]: entry["loss"] for entry in run.log_history if "loss" in entry and "step" in entry}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((value for key, value in PEAK_BF16_TFLOPS.items() if key in device), None)
    result.update(
        trainable_params=recorder.trainable,
        steps=len(steps),
        first_step=steps[0]["step"] if steps else None,
        timed_steps=len(timed),
        global_step=max(losses) if losses else None,
        step_ms=1000 * median_s,
        tokens_per_s=tokens / median_s,
        step_tflops=flops / 1e12,
        mfu_pct=100 * flops / median_s / (peak * 1e12) if peak else None,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        losses=losses,
        batch=recipe["training"]["per_device_train_batch_size"],
        grad_accum=recipe["training"].get("gradient_accumulation_steps", 1),
        attn_implementation=str(model.config.text_config._attn_implementation),
        weight_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
    )
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------- driver


def subprocess_env() -> dict[str, str]:
    """The environment of the subprocesses: the repository root first on the existing `PYTHONPATH` (which may hold
    packages installed outside the interpreter, as on the GPU machine)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_mode(args: argparse.Namespace, mode: str, output_dir: Path, max_steps: int, extra: list[str] = ()) -> dict:
    """One mode in its own process; its result, or the failure."""
    result_path = args.work / f"result_{output_dir.name}.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--run-mode", mode, "--result", str(result_path)]
    command += ["--work", str(args.work), "--overrides", *recipe_overrides(args, mode, output_dir, max_steps), *extra]
    start = time.perf_counter()
    process = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env())
    if result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        result = {"mode": mode, "error": f"exit status {process.returncode} (see the log above)"}
    result["wall_s"] = time.perf_counter() - start
    return result


def evaluate(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    """`occvla-hf eval planning` and `eval qa` of `model_dir` on the val split; their metrics and seconds."""
    results = {}
    for task in ("planning", "qa"):
        report = args.work / f"eval_{task}.json"
        command = [sys.executable, "-m", "occvla_hf.cli", "eval", task, "--model", str(model_dir)]
        command += ["--data", str(args.work / "data"), "--split", EVAL_SPLIT, "--batch-size", str(EVAL_ROWS_BATCH)]
        command += ["--report", str(report)]
        start = time.perf_counter()
        process = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env())
        seconds = time.perf_counter() - start
        if process.returncode or not report.is_file():
            results[task] = {"error": f"exit status {process.returncode}", "seconds": seconds}
        else:
            results[task] = {"metrics": json.loads(report.read_text()).get("metrics"), "seconds": seconds}
    return results


def resume_check(uninterrupted: dict, resumed: dict, resume_step: int, max_steps: int) -> dict[str, Any]:
    """The resumed run's final step and the loss of its first step against the uninterrupted run's."""
    if "error" in resumed or "error" in uninterrupted:
        return {"ok": False, "error": resumed.get("error") or uninterrupted.get("error")}
    step = str(resume_step + 1)  # the resumed run's log history starts with the checkpoint's
    first, reference = resumed["losses"].get(step), uninterrupted["losses"].get(step)
    finite = all(math.isfinite(value) for key, value in resumed["losses"].items() if int(key) > resume_step)
    return {
        "resumed_from": resume_step,
        "first_step_run": resumed["first_step"],
        "steps_run": resumed["steps"],
        "global_step": resumed["global_step"],
        "loss_first_resumed_step": first,
        "loss_same_step_uninterrupted": reference,
        "relative_difference": abs(first - reference) / max(abs(reference), 1e-12) if first and reference else None,
        "ok": resumed["global_step"] == max_steps and finite and resumed["first_step"] == resume_step + 1,
    }


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paligemma2-3b")
    parser.add_argument("--work", type=Path, required=True, help="folder of the checkpoint, data and runs")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimiser steps per mode, halved by the checkpoint (default 50; tiny 10)",
    )
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (default: the recipe's)")
    parser.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation (default: the recipe's)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="dataloader workers")
    parser.add_argument("--no-resume", action="store_true", help="skip the resume and evaluation step")
    parser.add_argument(
        "--lm-attention",
        choices=("eager", "sdpa", "flex_attention"),
        default=None,
        help="the language model's attention (the vision tower keeps SDPA); default: the recipe's",
    )
    parser.add_argument("--lora-dropout", type=float, default=LORA["lora_dropout"], help="the lora mode's dropout")
    parser.add_argument("--json", type=Path, default=None, help="write everything here too")
    parser.add_argument("--run-mode", choices=MODES, help=argparse.SUPPRESS)  # one run (a subprocess)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", nargs=argparse.REMAINDER, default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_mode:
        worker(args)
        return
    args.work = args.work.resolve()
    args.steps = args.steps or (10 if args.preset == "tiny" else 50)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": _version("peft"),
        },
        "recipe": str(RECIPE.relative_to(REPO_ROOT)),
        "steps": args.steps,
        "lora": {**LORA, "lora_dropout": args.lora_dropout},
        "lm_attention": args.lm_attention or "the recipe's",
        "timings_s": {},
        "notes": [
            "random weights throughout; the occupancy VAE is random (not stage-1 trained): it only fixes the shape "
            "of the occupancy targets; the evaluation numbers mean nothing",
        ],
    }
    timings = report["timings_s"]
    start = time.perf_counter()
    report["checkpoint"] = build_checkpoint(args.preset, args.work / "paligemma")
    build_vae(args.preset, args.work / "vae")
    timings["checkpoint"] = time.perf_counter() - start
    start = time.perf_counter()
    build_data(args.work)
    timings["data"] = time.perf_counter() - start
    if args.batch is not None or args.grad_accum is not None:
        report["notes"].append(
            f"batch / gradient accumulation changed from the recipe's: {args.batch} / {args.grad_accum}"
        )
    results = {}
    for mode in args.modes:
        if mode == "lora" and importlib.util.find_spec("peft") is None:
            results[mode] = {"mode": mode, "error": "the lora mode needs the `peft` package, which is not installed"}
            continue
        output_dir = args.work / f"run_{mode}"
        shutil.rmtree(output_dir, ignore_errors=True)
        results[mode] = run_mode(args, mode, output_dir, args.steps)
        timings[mode] = results[mode]["wall_s"]
        if mode != "act_ckpt" or args.no_resume:
            shutil.rmtree(output_dir, ignore_errors=True)  # disk: a 3B checkpoint per mode
    report["modes"] = results
    if "act_ckpt" in results and not args.no_resume:
        output_dir = args.work / "run_act_ckpt"
        checkpoint = output_dir / f"checkpoint-{args.steps // 2}"
        for path in output_dir.iterdir():  # keep only the step-N/2 checkpoint (disk)
            if path != checkpoint:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        resumed_dir = args.work / "run_act_ckpt_resumed"
        shutil.rmtree(resumed_dir, ignore_errors=True)
        start = time.perf_counter()
        resumed = run_mode(args, "act_ckpt", resumed_dir, args.steps, ["--resume_from_checkpoint", str(checkpoint)])
        timings["resume"] = time.perf_counter() - start
        shutil.rmtree(output_dir, ignore_errors=True)
        report["resume"] = resume_check(results["act_ckpt"], resumed, args.steps // 2, args.steps)
        if "error" not in resumed:
            start = time.perf_counter()
            report["evaluation"] = evaluate(args, resumed_dir)
            timings["evaluation"] = time.perf_counter() - start
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _version(package: str) -> str | None:
    if importlib.util.find_spec(package) is None:
        return None
    return importlib.import_module(package).__version__


def print_report(report: dict[str, Any]) -> None:
    versions = ", ".join(f"{name} {value}" for name, value in report["versions"].items())
    print(
        f"\n# device {report['device']}, {versions}; preset {report['preset']}, {report['recipe']}, "
        f"{report['steps']} steps per mode"
    )
    header = ("mode", "trainable params", "peak GiB", "step ms", "tokens/s", "MFU %", "notes")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for mode, result in report["modes"].items():
        if "error" in result:
            print(f"| {mode} | - | - | - | - | - | failed: {result['error']} |")
            continue
        notes = (
            f"batch {result['batch']} x accum {result['grad_accum']}, {result['weight_dtype']} weights, "
            f"{result['attn_implementation']} attention, {result['step_tflops']:.3g} TFLOP/step"
        )
        print(
            f"| {mode} | {result['trainable_params'] / 1e6:.1f} M | {fmt(result['peak_gib'], '.1f')} | "
            f"{result['step_ms']:.0f} | {result['tokens_per_s']:.0f} | {fmt(result['mfu_pct'], '.1f')} | {notes} |"
        )
    if "resume" in report:
        print(f"resume: {json.dumps(report['resume'])}")
    for task, value in report.get("evaluation", {}).items():
        if "error" in value:
            print(f"eval {task}: failed, {value['error']}")
            continue
        metrics = value["metrics"]
        summary = (
            (
                f"ST-P3 L2 avg {metrics['stp3']['l2_avg_m']:.2f} m, meta-action accuracy "
                f"{metrics['meta_action_accuracy_pct']:.1f}%, {metrics['num_samples']} rows"
            )
            if task == "planning"
            else f"accuracy {metrics['overall']['accuracy_pct']:.1f}% of {metrics['num_questions']} questions"
        )
        print(f"eval {task} ({value['seconds']:.0f} s): {summary}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()))
    for note in report["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
