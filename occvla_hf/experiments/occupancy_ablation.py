"""The occupancy ablation: the embedded OccVLA recipe trained with and without occupancy supervision, same data,
steps and seeds, evaluated on held-out sim scenes (a different seed range), printed as tables.

    python -m occvla_hf.experiments.occupancy_ablation prepare --sim SIM_DIR --occupancy OCC_DIR --out .device_data
    python -m occvla_hf.experiments.occupancy_ablation run --data .device_data --seeds 0 1 2 --out results/
    python -m occvla_hf.experiments.occupancy_ablation report results/*.json
    python -m occvla_hf.experiments.occupancy_ablation card --model DIR --run results/occ_s0.json --setup S.md \
        --findings F.md --dataset D --eval-dataset E results/*.json

`run` trains stage 1 (configs/embedded_vae.yaml) unless `--vae` names a trained VAE, then stage 2 for every variant
(`VARIANTS`: `occ` = configs/embedded_joint.yaml, `no_occ` = configs/embedded_joint_no_occ.yaml, and variants of
`occ` that change one occupancy setting: query count, loss weight, voxel loss through the frozen decoder) and seed,
`--parallel` runs at a time (separate `occvla-hf train joint` processes sharing the GPU), and evaluates every run:
planning L2 and collision (ST-P3 and UniAD protocols), QA accuracy per question type, the latency of `plan` at batch
1 (timed once every run has trained, so that no training shares the device) and, when the held-out scenes have
occupancy labels, the Occ3D mIoU of the occupancy decoded from the queries (for `no_occ` too: its queries were never
trained, the floor); and compares every model with a constant-velocity
extrapolation of the ego status on the same held-out keyframes, those with a valid ego velocity
(`constant_velocity.json`). One JSON file per run is written to `--out`. `report` prints mean +- standard deviation
over the runs of each variant (all seeds, and repeated rounds of the same seeds: GPU training is not bit-reproducible,
so a rerun of a seed is another sample).
`card` writes the model card of a shipped checkpoint (`DIR/README.md`): the package template filled from the run's
training log and its planning and QA reports (the card's evaluation and `model-index`), with the setup text, these tables and the findings text as its ablation section.
`--data` holds `train/` (the training scenes, an `occvla-hf data build` folder) and `eval/` (held-out scenes
generated from another seed; all of its splits are evaluated; an `occupancy` config there may hold only the labels:
`sample_token`, `semantics`, `mask_camera`, joined to the images of the planning rows).
Recipe paths are relative to the working directory (the repository root).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets

from occvla_hf.constants import PLANNING_PROTOCOL_NAMES, QA_HOPS, QA_QUESTION_TYPES
from occvla_hf.data.load import load_configs
from occvla_hf.evaluation.baselines import has_velocity
from occvla_hf.evaluation.runner import (
    evaluate_constant_velocity,
    evaluate_occupancy,
    evaluate_planning,
    evaluate_qa,
    load_model_and_processor,
    model_inputs,
)
from occvla_hf.evaluation.timing import call_times_ms
from occvla_hf.experiments.probes import probe_report
from occvla_hf.training.image_cache import open_image_cache
from occvla_hf.training.recipe import load_recipe
from occvla_hf.training.vae import train_from_config


@dataclass(frozen=True)
class Variant:
    """One trained configuration of an ablation.

    Args:
        recipe: the stage-2 YAML recipe.
        overrides: recipe overrides (`--section.key VALUE` tokens) on top of it.
        label: the variant's name in the tables.
        train_data: the folder of the training dataset under the experiment's `--data`.
    """

    recipe: str
    overrides: tuple[str, ...]
    label: str
    train_data: str = "train"

    def occupancy_supervision(self) -> bool:
        """Whether the recipe, with the overrides, trains with occupancy supervision."""
        return bool(load_recipe(self.recipe, self.overrides).get("occupancy_supervision", True))


OCC_RECIPE: str = "configs/embedded_joint.yaml"
VARIANTS: dict[str, Variant] = {
    "occ": Variant(OCC_RECIPE, (), "with occupancy"),
    "no_occ": Variant("configs/embedded_joint_no_occ.yaml", (), "without occupancy"),
    "occ_q25": Variant(
        OCC_RECIPE, ("--model.config.num_occupancy_queries_hw", "[25, 25]"), "occupancy, 25 x 25 queries"
    ),
    "occ_w5": Variant(OCC_RECIPE, ("--model.config.occupancy_loss_weight", "5.0"), "occupancy, loss weight 5"),
    "occ_voxel": Variant(OCC_RECIPE, ("--model.config.occupancy_voxel_loss_weight", "1.0"), "occupancy, + voxel loss"),
}
VAE_RECIPE: str = "configs/embedded_vae.yaml"
LATENCY_REPEATS: int = 30
# Batch sizes of the held-out evaluation of a run (`evaluate_run`).
EVAL_BATCH_SIZES: dict[str, int] = {"planning": 32, "qa": 64, "occupancy": 4}
LATENCY_WARMUP: int = 3
LATENCY_NEW_TOKENS: int = 8
HORIZONS: tuple[str, ...] = ("1s", "2s", "3s", "avg")
PROTOCOL_NAMES: dict[str, str] = PLANNING_PROTOCOL_NAMES
CV_VARIANT: str = "constant_velocity"
HISTORY_CV_KEY: str = "from_ego_history"  # the constant-velocity report's subsets, velocity from the ego history
HELD_OUT_DIR: str = "eval"

# A planning subset: report key -> rows of the held-out planning rows it keeps.
PlanningSubsets = Mapping[str, Callable[[Dataset], Dataset]]


# --------------------------------------------------------------------------------------------- held-out data


def held_out_rows(data_dir: Path, config: str, held_out: str = HELD_OUT_DIR) -> Dataset:
    """Every split of one config of the held-out scenes (`data_dir / held_out`), concatenated."""
    splits = load_configs(data_dir / held_out)[config]
    return concatenate_datasets([splits[name] for name in sorted(splits)])


def velocity_keyframes(rows: Dataset) -> Dataset:
    """The planning rows with a valid ego velocity (vx, vy) and at least one future waypoint: where the
    constant-velocity baseline is defined and `evaluate_planning` scores a plan."""
    valid = has_velocity(np.asarray(rows["ego_status_valid"], dtype=bool))
    valid &= np.asarray(rows["trajectory_mask"], dtype=bool).any(axis=1)
    return rows.select(np.flatnonzero(valid))


def held_out_occupancy_rows(data_dir: Path, planning: Dataset, held_out: str = HELD_OUT_DIR) -> Dataset | None:
    """The held-out occupancy labels joined to the images and cameras of their `planning` rows (by sample token), or
    None when the held-out scenes have no `occupancy` config."""
    configs = load_configs(data_dir / held_out)
    if "occupancy" not in configs:
        return None
    labels = concatenate_datasets([configs["occupancy"][name] for name in sorted(configs["occupancy"])])
    index = {token: i for i, token in enumerate(planning["sample_token"])}
    missing = [token for token in labels["sample_token"] if token not in index]
    if missing:
        raise ValueError(f"eval occupancy: {len(missing)} keyframes have no planning row (e.g. {missing[0]})")
    rows = planning.select([index[token] for token in labels["sample_token"]])
    return rows.add_column("semantics", labels["semantics"]).add_column("mask_camera", labels["mask_camera"])


# ------------------------------------------------------------------------------------------------ evaluation

PLANNING_SUBSETS: dict[str, Callable[[Dataset], Dataset]] = {"planning_with_velocity": velocity_keyframes}


def constant_velocity_report(planning: Dataset, subsets: PlanningSubsets = PLANNING_SUBSETS) -> dict[str, Any]:
    """The `constant_velocity` report: the baseline on each planning subset of the held-out rows, with the velocity
    of the ego status, and under `HISTORY_CV_KEY` with that of the ego history's last step (the baseline of the
    planners without ego status)."""
    selected = {key: select(planning) for key, select in subsets.items()}
    return {
        "variant": CV_VARIANT,
        **{key: evaluate_constant_velocity(rows) for key, rows in selected.items()},
        HISTORY_CV_KEY: {key: evaluate_constant_velocity(rows, source="ego_history") for key, rows in selected.items()},
    }


@torch.inference_mode()
def plan_latency_ms(
    models: Sequence[tuple[Any, Any]], rows: Dataset, repeats: int = LATENCY_REPEATS
) -> list[dict[str, float]]:
    """Wall time of `model.plan` (meta-action text + trajectory) at batch 1, milliseconds, of each (model, processor)
    on the first row: with exactly `LATENCY_NEW_TOKENS` generated tokens (the same work for every model: what
    compares architectures) and as used (until the end-of-sequence token: what a user waits, which also depends on
    how long the model's answer is). The models are timed alternately, call by call, so that drift on the host or
    the device (clocks, other load) hits all alike and their ratios hold."""
    inputs = [
        model_inputs(processor.from_rows(rows.select([0]), task="planning", training=False), model)
        for model, processor in models
    ]

    def timed(**kwargs: int) -> list[list[float]]:
        calls = [partial(model.plan, **model_input, **kwargs) for (model, _), model_input in zip(models, inputs)]
        return call_times_ms(calls, repeats=repeats, warmup=LATENCY_WARMUP, device=models[0][0].device)

    fixed = timed(max_new_tokens=LATENCY_NEW_TOKENS, min_new_tokens=LATENCY_NEW_TOKENS)
    as_used = timed()
    reports = []
    for (model, _), model_input, fixed_ms, as_used_ms in zip(models, inputs, fixed, as_used, strict=True):
        new_tokens = model.plan(**model_input).sequences.shape[1] - model_input["input_ids"].shape[1]
        reports.append(
            {
                "new_tokens": LATENCY_NEW_TOKENS,
                "median_ms": float(np.median(fixed_ms)),
                "p90_ms": float(np.percentile(fixed_ms, 90)),
                "as_used_new_tokens": int(new_tokens),
                "as_used_median_ms": float(np.median(as_used_ms)),
            }
        )
    return reports


def evaluate_run(
    model_dir: Path,
    data_dir: Path,
    *,
    held_out: str = HELD_OUT_DIR,
    subsets: PlanningSubsets = PLANNING_SUBSETS,
    probes: bool = False,
    num_workers: int = 0,
    image_cache: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Planning, QA, occupancy and latency report of one trained checkpoint on the held-out scenes; each key of
    `subsets` (default `planning_with_velocity`: the keyframes of the constant-velocity comparison) is planning on
    the held-out rows that subset keeps (from the same plans). `probes` adds `experiments.probes.probe_report` (key
    `probes`). `num_workers` loader processes prepare the batches of each evaluation. `plan` is timed apart
    (`plan_latency_ms`, `record_latencies`), with nothing else on the device.

    Every held-out keyframe's views are decoded and resized once, into the image cache `image_cache`
    (`training.image_cache`: built on first use, so runs with the same image settings share it) or, without one, a
    temporary cache of this evaluation; every evaluation reads them from there (QA has several questions per
    keyframe), with the same pixel values."""
    model, processor = load_model_and_processor(model_dir)
    planning_rows = held_out_rows(data_dir, "planning", held_out)
    occupancy_rows = held_out_occupancy_rows(data_dir, planning_rows, held_out)
    with contextlib.ExitStack() as stack:
        if image_cache is None:
            image_cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="occvla_eval_images_"))
        images = open_image_cache([planning_rows], processor, image_cache, num_workers=num_workers)
        planning = evaluate_planning(
            model,
            processor,
            planning_rows,
            batch_size=EVAL_BATCH_SIZES["planning"],
            subsets={key: select(planning_rows)["sample_token"] for key, select in subsets.items()},
            num_workers=num_workers,
            images=images,
        )
        subset_reports = planning.pop("subsets")
        qa_rows = held_out_rows(data_dir, "qa", held_out)
        report = {
            "planning": planning,
            **subset_reports,
            "qa": evaluate_qa(
                model, processor, qa_rows, batch_size=EVAL_BATCH_SIZES["qa"], num_workers=num_workers, images=images
            ),
            "occupancy": None
            if occupancy_rows is None
            else evaluate_occupancy(
                model,
                processor,
                occupancy_rows,
                batch_size=EVAL_BATCH_SIZES["occupancy"],
                num_workers=num_workers,
                images=images,
            ),
            "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        if probes:
            report["probes"] = probe_report(model, processor, planning_rows, num_workers=num_workers, images=images)
    return report


# ------------------------------------------------------------------------------------------------ the runner


def train_command(
    variant: Variant, seed: int, out_dir: Path, vae_dir: Path, data_dir: Path, overrides: Sequence[str]
) -> list[str]:
    """The `occvla-hf train joint` command line of one run."""
    return [
        sys.executable,
        "-m",
        "occvla_hf.cli",
        "train",
        "joint",
        "--config",
        variant.recipe,
        *variant.overrides,
        "--training.seed",
        str(seed),
        "--training.output_dir",
        str(out_dir),
        "--occupancy_vae",
        str(vae_dir),
        "--data.path",
        str(data_dir / variant.train_data),
        *overrides,
    ]


def train_vae(recipe_path: str, data_dir: Path, vae_dir: Path, overrides: Sequence[str], out: Path) -> None:
    """Stage 1 on the training scenes' occupancy config; its metrics go to `out / vae_metrics.json`."""
    recipe = load_recipe(
        recipe_path,
        [
            "--training.output_dir",
            str(vae_dir),
            "--dataset",
            str(data_dir / "train" / "arrow" / "occupancy"),
            *overrides,
        ],
    )
    start = time.perf_counter()
    result = train_from_config(recipe)
    print(f"vae: {time.perf_counter() - start:.0f} s, {result.metrics}", flush=True)
    (out / "vae_metrics.json").write_text(json.dumps(result.metrics, indent=1))


def train_runs(
    variants: Mapping[str, Variant],
    jobs: Sequence[tuple[str, int]],
    *,
    data_dir: Path,
    runs_dir: Path,
    vae_dir: Path,
    out: Path,
    parallel: int,
    joint_overrides: Sequence[str],
    on_finished: Callable[[str, int], None] | None = None,
) -> None:
    """Trains every (variant, seed) of `jobs` into `runs_dir/<variant>_s<seed>`, `parallel` processes at a time,
    each logging to `out/train_<variant>_s<seed>.log`. `on_finished(variant, seed)` runs as each one ends, on one
    background thread (one evaluation at a time, in the order the runs end), so that it overlaps the next runs'
    training and never holds back the start of a run; this returns once every evaluation has returned."""
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, IO[str], str, int, float]] = []

    def start_pending() -> None:
        while pending and len(running) < parallel:
            name, seed = pending.pop(0)
            log = open(out / f"train_{name}_s{seed}.log", "w")  # noqa: SIM115 (closed when the process ends)
            command = train_command(
                variants[name], seed, runs_dir / f"{name}_s{seed}", vae_dir, data_dir, joint_overrides
            )
            running.append(
                (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, name, seed, time.perf_counter())
            )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluate") as evaluations:
        start_pending()
        while running:
            time.sleep(2)
            finished = [job for job in running if job[0].poll() is not None]
            for job in finished:
                running.remove(job)
                process, log, name, seed, started = job
                log.close()
                seconds = time.perf_counter() - started
                print(f"{name} seed {seed}: exit {process.returncode} after {seconds:.0f} s", flush=True)
            start_pending()
            if on_finished is not None:
                for _, _, name, seed, _ in finished:
                    evaluations.submit(on_finished, name, seed)


def run_ablation(
    variants: Mapping[str, Variant],
    args: argparse.Namespace,
    *,
    vae_recipe: str,
    subsets: PlanningSubsets = PLANNING_SUBSETS,
) -> None:
    """The `run` command of an ablation over `variants`: stage 1 (unless `args.vae`), the constant-velocity report,
    every (variant, seed) of `args.variants` x `args.seeds` trained and evaluated, one JSON per run in `args.out`."""
    out, data_dir, runs_dir = Path(args.out), Path(args.data), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    vae_dir = Path(args.vae) if args.vae else runs_dir / "vae"
    if not args.vae:
        train_vae(vae_recipe, data_dir, vae_dir, shlex.split(args.vae_overrides), out)
    baseline = constant_velocity_report(held_out_rows(data_dir, "planning", args.held_out), subsets)
    (out / f"{CV_VARIANT}.json").write_text(json.dumps(baseline, indent=1))
    jobs = [(name, seed) for seed in args.seeds for name in args.variants]

    def evaluate_or_report(name: str, seed: int) -> None:
        """`evaluate`; a failure is printed and kept in `<variant>_s<seed>.error.txt`, and the other runs go on."""
        try:
            evaluate(name, seed)
        except Exception:  # noqa: BLE001 (any failure of one run's evaluation is reported, not fatal)
            message = traceback.format_exc()
            (out / f"{name}_s{seed}.error.txt").write_text(message)
            print(f"{name} seed {seed}: evaluation failed\n{message}", flush=True)

    def evaluate(name: str, seed: int) -> None:
        model_dir = runs_dir / f"{name}_s{seed}"
        if not (model_dir / "config.json").is_file():
            print(f"{name} seed {seed}: no checkpoint, see its log", flush=True)
            return
        report = {
            "variant": name,
            "seed": seed,
            **evaluate_run(
                model_dir,
                data_dir,
                held_out=args.held_out,
                subsets=subsets,
                probes=args.probes,
                num_workers=args.eval_workers,
                image_cache=args.eval_image_cache,
            ),
            "latency": {},  # `record_latencies` times `plan` once every run has trained
        }
        state = json.loads((model_dir / "trainer_state.json").read_text())
        report["train_log"] = state["log_history"]
        (out / f"{name}_s{seed}.json").write_text(json.dumps(report, indent=1))
        print(
            f"{name} seed {seed}: stp3 L2 avg {report['planning']['stp3']['l2_avg_m']:.3f} m "
            f"({report['planning_with_velocity']['stp3']['l2_avg_m']:.3f} m with velocity, constant velocity "
            f"{baseline['planning_with_velocity']['stp3']['l2_avg_m']:.3f} m), "
            f"QA {report['qa']['overall']['accuracy_pct']:.1f}%",
            flush=True,
        )

    train_runs(
        variants,
        jobs,
        data_dir=data_dir,
        runs_dir=runs_dir,
        vae_dir=vae_dir,
        out=out,
        parallel=args.parallel,
        joint_overrides=shlex.split(args.joint_overrides),
        on_finished=evaluate_or_report,
    )
    record_latencies(jobs, runs_dir, out, held_out_rows(data_dir, "planning", args.held_out), args.latency_repeats)


def record_latencies(
    jobs: Sequence[tuple[str, int]], runs_dir: Path, out: Path, rows: Dataset, repeats: int = LATENCY_REPEATS
) -> None:
    """`plan_latency_ms` of the evaluated runs into their reports' `latency`, once every run has trained (during the
    runs, an evaluation shares the device with the next run's training, and its timing would measure that), all
    runs timed alternately in one loop. A run that fails to load keeps an empty `latency`, and so do all when the
    timing fails; the error goes to `<variant>_s<seed>.error.txt`."""
    loaded: list[tuple[Path, dict[str, Any], tuple[Any, Any]]] = []
    for name, seed in jobs:
        path = out / f"{name}_s{seed}.json"
        if not path.is_file():
            continue
        try:
            loaded.append((path, json.loads(path.read_text()), load_model_and_processor(runs_dir / f"{name}_s{seed}")))
        except Exception:  # noqa: BLE001 (one run's failed timing is reported, not fatal)
            _timing_failed(out, name, seed)
    if not loaded:
        return
    try:
        latencies = plan_latency_ms([models for _, _, models in loaded], rows, repeats=repeats)
    except Exception:  # noqa: BLE001
        for _, report, _ in loaded:
            _timing_failed(out, report["variant"], report["seed"])
        return
    for (path, report, _), latency in zip(loaded, latencies, strict=True):
        report["latency"] = latency
        path.write_text(json.dumps(report, indent=1))
        print(f"{report['variant']} seed {report['seed']}: plan() {latency['median_ms']:.1f} ms", flush=True)


def _timing_failed(out: Path, name: str, seed: int) -> None:
    message = traceback.format_exc()
    (out / f"{name}_s{seed}.error.txt").write_text(message)
    print(f"{name} seed {seed}: timing plan() failed\n{message}", flush=True)


def add_run_arguments(parser: argparse.ArgumentParser, variants: Mapping[str, Variant], default: Sequence[str]) -> None:
    """The `run` command's options, shared by the ablations."""
    parser.add_argument("--data", default=".device_data", help="folder with train/ and eval/ dataset folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(variants), default=list(default))
    parser.add_argument("--vae", default=None, help="a trained stage-1 VAE folder (default: train one)")
    parser.add_argument("--runs", default="runs/ablation", help="where checkpoints are written")
    parser.add_argument("--parallel", type=int, default=2, help="training processes at a time")
    parser.add_argument(
        "--vae-overrides", default="", help="recipe overrides of stage 1, e.g. '--training.max_steps 10'"
    )
    parser.add_argument("--joint-overrides", default="", help="recipe overrides of every stage-2 run")
    parser.add_argument("--held-out", default=HELD_OUT_DIR, help="the folder under --data that is evaluated")
    parser.add_argument("--latency-repeats", type=int, default=LATENCY_REPEATS, help="timed `plan` calls per run")
    parser.add_argument(
        "--probes", action="store_true", help="add linear probes of the held-out states (`experiments.probes`)"
    )
    parser.add_argument(
        "--eval-workers", type=int, default=0, help="loader processes preparing the evaluation batches of each run"
    )
    parser.add_argument(
        "--eval-image-cache",
        default=None,
        help="image cache folder of the held-out views, built by the first evaluation and read by every run's "
        "(default: a temporary one per run)",
    )
    parser.add_argument("--out", required=True, help="folder for the per-run JSON reports and logs")


def prepare(args: argparse.Namespace) -> None:
    """Builds `planning` and `qa` of the sim dataroots `<sim>/train` and `<sim>/eval` into `<out>/train` and
    `<out>/eval`, and copies built `occupancy` configs (Arrow folders) next to them."""
    from occvla_hf.data.hub import build_dataset, save_dataset

    for name in ("train", "eval"):
        root = Path(args.sim) / name
        built = build_dataset(
            root,
            args.version,
            qa_root=root / "nuscenes_qa",
            configs=["planning", "qa"],
            image_mode="bytes",
            cache_dir=Path(args.out) / "cache" / name,
        )
        save_dataset(built, Path(args.out) / name, version=args.version, image_mode="bytes")
        print(name, {config: {split: len(rows) for split, rows in splits.items()} for config, splits in built.items()})
    for name, source in (("train", args.occupancy), ("eval", args.occupancy_eval)):
        if source:
            shutil.copytree(source, Path(args.out) / name / "arrow" / "occupancy", dirs_exist_ok=True)


# ----------------------------------------------------------------------------------------------------- tables


def mean_std(values: Sequence[float | None]) -> str:
    """`mean ± std` of the values that are not None, 2 decimals; `-` without any."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "-"
    return f"{np.mean(kept):.2f} ± {np.std(kept):.2f}"


def runs_by_variant(reports: Sequence[dict[str, Any]], variants: Mapping[str, Variant]) -> dict[str, list[dict]]:
    """The reports of each variant that has any, in the order of `variants`."""
    return {
        name: [r for r in reports if r["variant"] == name]
        for name in variants
        if any(r["variant"] == name for r in reports)
    }


def planning_tables(
    runs: Mapping[str, Sequence[dict[str, Any]]], variants: Mapping[str, Variant], key: str, title: str
) -> list[str]:
    """One table per protocol of the planning report `key` of every run: L2 and collision per horizon."""
    lines = []
    for protocol, protocol_name in PROTOCOL_NAMES.items():
        lines += [
            f"{title}, {protocol_name} protocol (L2 in m, collision in %; mean ± std over runs)",
            "",
            "| Variant | runs | "
            + " | ".join(f"L2 {h}" for h in HORIZONS)
            + " | "
            + " | ".join(f"Col. {h}" for h in HORIZONS)
            + " |",
            "|---" * (2 + 2 * len(HORIZONS)) + "|",
        ]
        for name, named_runs in runs.items():
            rows = [r[key][protocol] for r in named_runs]
            cells = [mean_std([row[f"l2_{h}_m"] for row in rows]) for h in HORIZONS]
            cells += [mean_std([row[f"collision_{h}_pct"] for row in rows]) for h in HORIZONS]
            lines.append(f"| {variants[name].label} | {len(named_runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def baseline_table(
    runs: Mapping[str, Sequence[dict[str, Any]]],
    variants: Mapping[str, Variant],
    baseline: dict[str, Any],
    key: str,
    keyframes: str,
) -> list[str]:
    """The models against constant velocity on the planning subset `key` (`keyframes` describes it)."""
    compared = {
        **{variants[name].label: [r[key] for r in named_runs] for name, named_runs in runs.items()},
        "constant velocity (ego status)": [baseline[key]],
    }
    if key in baseline.get(HISTORY_CV_KEY, {}):  # reports made before it have no such baseline
        compared["constant velocity (ego history, last 0.5 s)"] = [baseline[HISTORY_CV_KEY][key]]
    title = (
        f"Model vs constant velocity on the {baseline[key]['num_samples']} held-out keyframes {keyframes} "
        "(L2 in m, mean ± std over runs)"
    )
    lines = [
        title,
        "",
        "| Planner | "
        + " | ".join(f"{PROTOCOL_NAMES[p]} L2 {h}" for p in PROTOCOL_NAMES for h in HORIZONS)
        + " | ST-P3 Col. avg |",
        "|---" * (2 + len(PROTOCOL_NAMES) * len(HORIZONS)) + "|",
    ]
    for name, rows in compared.items():
        cells = [mean_std([row[p][f"l2_{h}_m"] for row in rows]) for p in PROTOCOL_NAMES for h in HORIZONS]
        cells.append(mean_std([row["stp3"]["collision_avg_pct"] for row in rows]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def qa_occupancy_latency_tables(
    runs: Mapping[str, Sequence[dict[str, Any]]], variants: Mapping[str, Variant]
) -> list[str]:
    """QA per type and hop (with the meta-action accuracy), query occupancy mIoU / IoU, `plan` latency."""
    lines = [
        "QA accuracy (%) on held-out scenes, per question type (mean ± std over runs)",
        "",
        "| Variant | overall | "
        + " | ".join(QA_HOPS)
        + " | "
        + " | ".join(QA_QUESTION_TYPES)
        + " | meta-action acc. |",
        "|---" * (5 + len(QA_QUESTION_TYPES)) + "|",
    ]
    for name, named_runs in runs.items():
        qa = [r["qa"] for r in named_runs]
        cells = [mean_std([q["overall"]["accuracy_pct"] for q in qa])]
        cells += [mean_std([q["by_hop"][hop]["accuracy_pct"] for q in qa]) for hop in QA_HOPS]
        cells += [mean_std([q["by_type"][t]["all"]["accuracy_pct"] for q in qa]) for t in QA_QUESTION_TYPES]
        cells.append(mean_std([r["planning"]["meta_action_accuracy_pct"] for r in named_runs]))
        lines.append(f"| {variants[name].label} | " + " | ".join(cells) + " |")
    with_occupancy = {name: named for name, named in runs.items() if all(r.get("occupancy") for r in named)}
    if with_occupancy:
        title = (
            "Occupancy decoded from the queries through the frozen VAE decoder, held-out keyframes (Occ3D mIoU "
            "over 17 classes and geometric IoU, %; mean ± std over runs)"
        )
        lines += [
            "",
            title,
            "",
            "| Variant | mIoU | IoU | mIoU (camera mask) | IoU (camera mask) |",
            "|---|---|---|---|---|",
        ]
        for name, named_runs in with_occupancy.items():
            cells = [
                mean_std([100.0 * r["occupancy"][key] for r in named_runs])
                for key in ("miou", "iou", "camera_miou", "camera_iou")
            ]
            lines.append(f"| {variants[name].label} | " + " | ".join(cells) + " |")
    timed = {name: [r for r in named if "new_tokens" in r["latency"]] for name, named in runs.items()}
    timed = {name: named for name, named in timed.items() if named}
    if timed:
        title = (
            "Inference latency of `plan` (meta-action + trajectory), batch 1, ms (mean ± std over runs of the "
            f"median of {LATENCY_REPEATS} calls)"
        )
        lines += [
            "",
            title,
            "",
            "| Variant | device | fixed new tokens | median | p90 | as used: new tokens | as used: median |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, named_runs in timed.items():
            cells = [str(named_runs[0]["latency"]["new_tokens"])]
            cells += [mean_std([r["latency"][key] for r in named_runs]) for key in ("median_ms", "p90_ms")]
            cells.append(" / ".join(str(r["latency"]["as_used_new_tokens"]) for r in named_runs))
            cells.append(mean_std([r["latency"]["as_used_median_ms"] for r in named_runs]))
            lines.append(f"| {variants[name].label} | {named_runs[0]['device']} | " + " | ".join(cells) + " |")
    return lines


def ablation_tables(reports: Sequence[dict[str, Any]], variants: Mapping[str, Variant] = VARIANTS) -> str:
    """Markdown tables (mean ± std over runs per variant): planning per protocol, the models against constant
    velocity (when a `constant_velocity` report is given), QA per type, query occupancy, latency."""
    runs = runs_by_variant(reports, variants)
    lines = planning_tables(runs, variants, "planning", "Planning")
    baseline = [r for r in reports if r["variant"] == CV_VARIANT]
    if baseline:
        lines += baseline_table(runs, variants, baseline[0], "planning_with_velocity", "with a valid ego velocity")
    lines += qa_occupancy_latency_tables(runs, variants)
    return "\n".join(lines)


def read_reports(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The per-run JSON reports among `paths` (files without a `variant`, e.g. VAE metrics, are left out)."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    return [r for r in reports if "variant" in r]


def report(args: argparse.Namespace) -> None:
    print(ablation_tables(read_reports(args.files)))


def card(args: argparse.Namespace) -> None:
    from occvla_hf.modeling import OccVLAConfig
    from occvla_hf.training.model_card import ModelCardInfo, render_model_card

    model_dir = Path(args.model)
    run_report = json.loads(Path(args.run).read_text())
    section = "\n\n".join(
        [
            "## Occupancy ablation (held-out sim scenes)",
            Path(args.setup).read_text().strip(),
            ablation_tables(read_reports(args.files)),
            Path(args.findings).read_text().strip(),
        ]
    )
    info = ModelCardInfo(
        training_data="sim",
        model_name=model_dir.name,
        datasets=[args.dataset],
        occupancy_supervision=VARIANTS[run_report["variant"]].occupancy_supervision(),
        evaluation={"planning": run_report["planning"], "qa": run_report["qa"]},
        evaluation_data=args.eval_dataset,
    )
    rendered = render_model_card(
        info,
        config=OccVLAConfig.from_pretrained(model_dir),
        repo_id=args.repo_id,
        log_history=run_report["train_log"],
        extra_sections=section,
    )
    rendered.save(model_dir / "README.md")
    print(f"wrote {model_dir / 'README.md'}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train and evaluate")
    add_run_arguments(run_parser, VARIANTS, default=["occ", "no_occ"])
    run_parser.set_defaults(func=lambda args: run_ablation(VARIANTS, args, vae_recipe=VAE_RECIPE))
    prepare_parser = commands.add_parser("prepare", help="build the datasets of the sim dataroots")
    prepare_parser.add_argument("--sim", required=True, help="folder with the train/ and eval/ sim dataroots")
    prepare_parser.add_argument("--version", default="v1.0-trainval")
    prepare_parser.add_argument("--occupancy", default=None, help="a built occupancy config (Arrow) of train/")
    prepare_parser.add_argument("--occupancy-eval", default=None, help="occupancy labels (Arrow) of eval/")
    prepare_parser.add_argument("--out", required=True)
    prepare_parser.set_defaults(func=prepare)
    report_parser = commands.add_parser("report", help="print the tables of per-run JSON reports")
    report_parser.add_argument("files", nargs="+")
    report_parser.set_defaults(func=report)
    card_parser = commands.add_parser("card", help="write a shipped checkpoint's model card with the ablation")
    card_parser.add_argument("--model", required=True, help="the checkpoint folder (its README.md is written)")
    card_parser.add_argument("--run", required=True, help="the JSON report of the run that produced the checkpoint")
    card_parser.add_argument("--setup", required=True, help="Markdown file: how the ablation was run")
    card_parser.add_argument("--findings", required=True, help="Markdown file: what it shows and why")
    card_parser.add_argument("--dataset", required=True, help="what the model was trained on, as the card names it")
    card_parser.add_argument(
        "--eval-dataset", required=True, help="what the run was evaluated on (its planning and QA reports)"
    )
    card_parser.add_argument("--repo-id", default=None, help="path or Hub id in the card's usage snippet")
    card_parser.add_argument("files", nargs="+", help="the per-run JSON reports")
    card_parser.set_defaults(func=card)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.func(args)


if __name__ == "__main__":
    main()
