"""The occupancy ablation: the embedded OccVLA recipe trained with and without occupancy supervision, same data,
steps and seeds, evaluated on held-out sim scenes (a different seed range), printed as tables.

    python -m benchmarks.ablation_occupancy prepare --sim SIM_DIR --occupancy OCC_DIR --out .device_data
    python -m benchmarks.ablation_occupancy run --data .device_data --seeds 0 1 2 --out results/
    python -m benchmarks.ablation_occupancy report results/*.json
    python -m benchmarks.ablation_occupancy card --model DIR --run results/occ_s0.json --setup S.md \
        --findings F.md results/*.json

`run` trains stage 1 (configs/embedded_vae.yaml) unless `--vae` names a trained VAE, then stage 2 for every variant
(`VARIANTS`: `occ` = configs/embedded_joint.yaml, `no_occ` = configs/embedded_joint_no_occ.yaml, and variants of
`occ` that change one occupancy setting: query count, loss weight, voxel loss through the frozen decoder) and seed,
`--parallel` runs at a time (separate `occvla-hf train joint` processes sharing the GPU), and evaluates every run:
planning L2 and collision (ST-P3 and UniAD protocols), QA accuracy per question type, the latency of `plan` at batch
1 and, when the held-out scenes have occupancy labels, the Occ3D mIoU of the occupancy decoded from the queries (for
`no_occ` too: its queries were never trained, the floor); and compares every model with a constant-velocity
extrapolation of the ego status on the same held-out keyframes, those with a valid ego velocity
(`constant_velocity.json`). One JSON file per run is written to `--out`. `report` prints mean +- standard deviation
over the runs of each variant (all seeds, and repeated rounds of the same seeds: GPU training is not bit-reproducible,
so a rerun of a seed is another sample).
`card` writes the model card of a shipped checkpoint (`DIR/README.md`): the package template filled from the run's
training log, with the setup text, these tables and the findings text as its ablation section.
`--data` holds `train/` (the training scenes, an `occvla-hf data build` folder) and `eval/` (held-out scenes
generated from another seed; all of its splits are evaluated; an `occupancy` config there may hold only the labels:
`sample_token`, `semantics`, `mask_camera`, joined to the images of the planning rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from datasets import concatenate_datasets

from occvla_hf.constants import PLANNING_PROTOCOL_NAMES, QA_HOPS, QA_QUESTION_TYPES
from occvla_hf.data.hub import load_saved
from occvla_hf.demo import constant_velocity_trajectories, has_velocity
from occvla_hf.evaluation.planning import PlanningMetricAccumulator
from occvla_hf.evaluation.runner import (
    evaluate_occupancy,
    evaluate_planning,
    evaluate_qa,
    load_model_and_processor,
    model_inputs,
    planning_targets,
)
from occvla_hf.training.recipe import load_recipe
from occvla_hf.training.vae import train_from_config

OCC_RECIPE: str = "configs/embedded_joint.yaml"
# variant -> (recipe, recipe overrides, label in the tables)
VARIANTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "occ": (OCC_RECIPE, (), "with occupancy"),
    "no_occ": ("configs/embedded_joint_no_occ.yaml", (), "without occupancy"),
    "occ_q25": (OCC_RECIPE, ("--model.config.num_occupancy_queries_hw", "[25, 25]"), "occupancy, 25 x 25 queries"),
    "occ_w5": (OCC_RECIPE, ("--model.config.occupancy_loss_weight", "5.0"), "occupancy, loss weight 5"),
    "occ_voxel": (OCC_RECIPE, ("--model.config.occupancy_voxel_loss_weight", "1.0"), "occupancy, + voxel loss"),
}
VAE_RECIPE: str = "configs/embedded_vae.yaml"
LATENCY_REPEATS: int = 30
LATENCY_NEW_TOKENS: int = 8
HORIZONS: tuple[str, ...] = ("1s", "2s", "3s", "avg")
PROTOCOL_NAMES: dict[str, str] = PLANNING_PROTOCOL_NAMES
CV_VARIANT: str = "constant_velocity"


def held_out_rows(data_dir: Path, config: str):
    """Every split of one config of the held-out scenes, concatenated."""
    splits = load_saved(data_dir / "eval")[config]
    return concatenate_datasets([splits[name] for name in sorted(splits)])


def velocity_keyframes(rows):
    """The planning rows with a valid ego velocity (vx, vy) and at least one future waypoint: where the
    constant-velocity baseline is defined and `evaluate_planning` scores a plan."""
    valid = has_velocity(np.asarray(rows["ego_status_valid"], dtype=bool))
    valid &= np.asarray(rows["trajectory_mask"], dtype=bool).any(axis=1)
    return rows.select(np.flatnonzero(valid))


def evaluate_constant_velocity(rows) -> dict[str, Any]:
    """`evaluate_planning`'s L2 and collision report for the constant-velocity extrapolation of the raw ego status
    on `velocity_keyframes` rows."""
    accumulator = PlanningMetricAccumulator()
    accumulator.update(
        pred=constant_velocity_trajectories(np.asarray(rows["ego_status"], dtype=np.float32)),
        mask=np.asarray(rows["trajectory_mask"], dtype=bool),
        **planning_targets(rows),
    )
    return accumulator.compute()


def _timed_ms(call, repeats: int, synchronize: bool) -> list[float]:
    """Wall times of `repeats` calls after 3 warm-up calls, milliseconds."""
    times_ms = []
    for step in range(repeats + 3):
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if synchronize:
            torch.cuda.synchronize()
        if step >= 3:
            times_ms.append(1000.0 * (time.perf_counter() - start))
    return times_ms


@torch.inference_mode()
def plan_latency_ms(model, processor, rows, repeats: int = LATENCY_REPEATS) -> dict[str, float]:
    """Wall time of `model.plan` (meta-action text + trajectory) at batch 1, milliseconds: with exactly
    `LATENCY_NEW_TOKENS` generated tokens (the same work for every model: what compares architectures) and as used
    (until the end-of-sequence token: what a user waits, which also depends on how long the model's answer is)."""
    inputs = model_inputs(processor.from_rows(rows.select([0]), task="planning", training=False), model)
    synchronize = model.device.type == "cuda"
    fixed = _timed_ms(lambda: model.plan(**inputs, max_new_tokens=LATENCY_NEW_TOKENS,
                                         min_new_tokens=LATENCY_NEW_TOKENS), repeats, synchronize)  # fmt: skip
    as_used = _timed_ms(lambda: model.plan(**inputs), repeats, synchronize)
    new_tokens = model.plan(**inputs).sequences.shape[1] - inputs["input_ids"].shape[1]
    return {"new_tokens": LATENCY_NEW_TOKENS, "median_ms": float(np.median(fixed)),
            "p90_ms": float(np.percentile(fixed, 90)), "as_used_new_tokens": int(new_tokens),
            "as_used_median_ms": float(np.median(as_used))}  # fmt: skip


def held_out_occupancy_rows(data_dir: Path, planning):
    """The held-out occupancy labels joined to the images and cameras of their `planning` rows (by sample token), or
    None when the held-out scenes have no `occupancy` config."""
    configs = load_saved(data_dir / "eval")
    if "occupancy" not in configs:
        return None
    labels = concatenate_datasets([configs["occupancy"][name] for name in sorted(configs["occupancy"])])
    index = {token: i for i, token in enumerate(planning["sample_token"])}
    missing = [token for token in labels["sample_token"] if token not in index]
    if missing:
        raise ValueError(f"eval occupancy: {len(missing)} keyframes have no planning row (e.g. {missing[0]})")
    rows = planning.select([index[token] for token in labels["sample_token"]])
    return rows.add_column("semantics", labels["semantics"]).add_column("mask_camera", labels["mask_camera"])


def evaluate_run(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Planning, QA, occupancy and latency report of one trained checkpoint on the held-out scenes;
    `planning_with_velocity` is planning on the keyframes of the constant-velocity comparison."""
    model, processor = load_model_and_processor(model_dir)
    planning_rows = held_out_rows(data_dir, "planning")
    occupancy_rows = held_out_occupancy_rows(data_dir, planning_rows)
    return {
        "planning": evaluate_planning(model, processor, planning_rows, batch_size=32),
        "planning_with_velocity": evaluate_planning(
            model, processor, velocity_keyframes(planning_rows), batch_size=32
        ),
        "qa": evaluate_qa(model, processor, held_out_rows(data_dir, "qa"), batch_size=64),
        "occupancy": None if occupancy_rows is None else evaluate_occupancy(model, processor, occupancy_rows),
        "latency": plan_latency_ms(model, processor, planning_rows),
        "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


def train_command(
    variant: str, seed: int, out_dir: Path, vae_dir: Path, data_dir: Path, overrides: Sequence[str]
) -> list[str]:
    recipe, variant_overrides, _ = VARIANTS[variant]
    return [
        sys.executable, "-m", "occvla_hf.cli", "train", "joint", "--config", recipe, *variant_overrides,
        "--training.seed", str(seed), "--training.output_dir", str(out_dir),
        "--occupancy_vae", str(vae_dir), "--data.path", str(data_dir / "train"), *overrides,
    ]  # fmt: skip


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(args.runs)
    vae_dir = Path(args.vae) if args.vae else runs_dir / "vae"
    if not args.vae:
        recipe = load_recipe(VAE_RECIPE, ["--training.output_dir", str(vae_dir),
                                          "--dataset", str(Path(args.data) / "train" / "arrow" / "occupancy"),
                                          *shlex.split(args.vae_overrides)])
        start = time.perf_counter()
        result = train_from_config(recipe)
        print(f"vae: {time.perf_counter() - start:.0f} s, {result.metrics}", flush=True)
        (out / "vae_metrics.json").write_text(json.dumps(result.metrics, indent=1))
    baseline = {"variant": CV_VARIANT,
                "planning_with_velocity": evaluate_constant_velocity(
                    velocity_keyframes(held_out_rows(Path(args.data), "planning")))}  # fmt: skip
    (out / f"{CV_VARIANT}.json").write_text(json.dumps(baseline, indent=1))
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, IO[str], str, int, float]] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            variant, seed = pending.pop(0)
            log = open(out / f"train_{variant}_s{seed}.log", "w")  # noqa: SIM115 (closed when the process ends)
            command = train_command(variant, seed, runs_dir / f"{variant}_s{seed}", vae_dir, Path(args.data),
                                    shlex.split(args.joint_overrides))
            running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, variant, seed,
                            time.perf_counter()))
        time.sleep(2)
        for job in [job for job in running if job[0].poll() is not None]:
            running.remove(job)
            process, log, variant, seed, started = job
            log.close()
            print(f"{variant} seed {seed}: exit {process.returncode} after {time.perf_counter() - started:.0f} s",
                  flush=True)
    for variant, seed in jobs:
        model_dir = runs_dir / f"{variant}_s{seed}"
        if not (model_dir / "config.json").is_file():
            print(f"{variant} seed {seed}: no checkpoint, see its log", flush=True)
            continue
        report = {"variant": variant, "seed": seed, **evaluate_run(model_dir, Path(args.data))}
        state = json.loads((model_dir / "trainer_state.json").read_text())
        report["train_log"] = state["log_history"]
        (out / f"{variant}_s{seed}.json").write_text(json.dumps(report, indent=1))
        print(f"{variant} seed {seed}: stp3 L2 avg {report['planning']['stp3']['l2_avg_m']:.3f} m "
              f"({report['planning_with_velocity']['stp3']['l2_avg_m']:.3f} m with velocity, constant velocity "
              f"{baseline['planning_with_velocity']['stp3']['l2_avg_m']:.3f} m), "
              f"QA {report['qa']['overall']['accuracy_pct']:.1f}%", flush=True)


def prepare(args: argparse.Namespace) -> None:
    """Builds `planning` and `qa` of the sim dataroots `<sim>/train` and `<sim>/eval` into `<out>/train` and
    `<out>/eval`, and copies built `occupancy` configs (Arrow folders) next to them."""
    from occvla_hf.data.hub import build_dataset, save_dataset

    for name in ("train", "eval"):
        root = Path(args.sim) / name
        built = build_dataset(root, args.version, qa_root=root / "nuscenes_qa", configs=["planning", "qa"],
                              image_mode="bytes", cache_dir=Path(args.out) / "cache" / name)
        save_dataset(built, Path(args.out) / name, version=args.version, image_mode="bytes")
        print(name, {config: {split: len(rows) for split, rows in splits.items()} for config, splits in built.items()})
    for name, source in (("train", args.occupancy), ("eval", args.occupancy_eval)):
        if source:
            shutil.copytree(source, Path(args.out) / name / "arrow" / "occupancy", dirs_exist_ok=True)


def _mean_std(values: Sequence[float | None]) -> str:
    kept = [v for v in values if v is not None]
    if not kept:
        return "-"
    return f"{np.mean(kept):.2f} ± {np.std(kept):.2f}"


def ablation_tables(reports: Sequence[dict[str, Any]]) -> str:
    """Markdown tables (mean ± std over runs per variant): planning per protocol, the models against constant
    velocity (when a `constant_velocity` report is given), QA per type, latency."""
    variants = {name: [r for r in reports if r["variant"] == name] for name in VARIANTS if any(
        r["variant"] == name for r in reports)}
    label = {name: text for name, (_, _, text) in VARIANTS.items()}
    lines = []
    for protocol, protocol_name in PROTOCOL_NAMES.items():
        lines += [f"Planning, {protocol_name} protocol (L2 in m, collision in %; mean ± std over runs)", "",
                  "| Variant | runs | " + " | ".join(f"L2 {h}" for h in HORIZONS) + " | "
                  + " | ".join(f"Col. {h}" for h in HORIZONS) + " |",
                  "|---" * (2 + 2 * len(HORIZONS)) + "|"]
        for name, runs in variants.items():
            rows = [r["planning"][protocol] for r in runs]
            cells = [_mean_std([row[f"l2_{h}_m"] for row in rows]) for h in HORIZONS]
            cells += [_mean_std([row[f"collision_{h}_pct"] for row in rows]) for h in HORIZONS]
            lines.append(f"| {label[name]} | {len(runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    baseline = [r for r in reports if r["variant"] == CV_VARIANT]
    if baseline:
        compared = {**{label[name]: [r["planning_with_velocity"] for r in runs] for name, runs in variants.items()},
                    "constant velocity (ego status)": [baseline[0]["planning_with_velocity"]]}  # fmt: skip
        title = (f"Model vs constant velocity on the {baseline[0]['planning_with_velocity']['num_samples']} held-out "
                 "keyframes with a valid ego velocity (L2 in m, mean ± std over runs)")
        lines += [title, "",
                  "| Planner | " + " | ".join(f"{PROTOCOL_NAMES[p]} L2 {h}" for p in PROTOCOL_NAMES for h in HORIZONS)
                  + " | ST-P3 Col. avg |", "|---" * (2 + len(PROTOCOL_NAMES) * len(HORIZONS)) + "|"]  # fmt: skip
        for name, rows in compared.items():
            cells = [_mean_std([row[p][f"l2_{h}_m"] for row in rows]) for p in PROTOCOL_NAMES for h in HORIZONS]
            cells.append(_mean_std([row["stp3"]["collision_avg_pct"] for row in rows]))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["QA accuracy (%) on held-out scenes, per question type (mean ± std over runs)", "",
              "| Variant | overall | " + " | ".join(QA_HOPS) + " | " + " | ".join(QA_QUESTION_TYPES)
              + " | meta-action acc. |",
              "|---" * (5 + len(QA_QUESTION_TYPES)) + "|"]
    for name, runs in variants.items():
        qa = [r["qa"] for r in runs]
        cells = [_mean_std([q["overall"]["accuracy_pct"] for q in qa])]
        cells += [_mean_std([q["by_hop"][hop]["accuracy_pct"] for q in qa]) for hop in QA_HOPS]
        cells += [_mean_std([q["by_type"][t]["all"]["accuracy_pct"] for q in qa]) for t in QA_QUESTION_TYPES]
        cells.append(_mean_std([r["planning"]["meta_action_accuracy_pct"] for r in runs]))
        lines.append(f"| {label[name]} | " + " | ".join(cells) + " |")
    with_occupancy = {name: runs for name, runs in variants.items() if all(r.get("occupancy") for r in runs)}
    if with_occupancy:
        title = ("Occupancy decoded from the queries through the frozen VAE decoder, held-out keyframes (Occ3D mIoU "
                 "over 17 classes and geometric IoU, %; mean ± std over runs)")
        lines += ["", title, "", "| Variant | mIoU | IoU | mIoU (camera mask) | IoU (camera mask) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, runs in with_occupancy.items():
            cells = [_mean_std([100.0 * r["occupancy"][key] for r in runs])
                     for key in ("miou", "iou", "camera_miou", "camera_iou")]
            lines.append(f"| {label[name]} | " + " | ".join(cells) + " |")
    timed = {name: [r for r in runs if "new_tokens" in r["latency"]] for name, runs in variants.items()}
    timed = {name: runs for name, runs in timed.items() if runs}
    if timed:
        title = ("Inference latency of `plan` (meta-action + trajectory), batch 1, ms (mean ± std over runs of the "
                 f"median of {LATENCY_REPEATS} calls)")
        lines += ["", title, "",
                  "| Variant | device | fixed new tokens | median | p90 | as used: new tokens | as used: median |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, runs in timed.items():
            cells = [str(runs[0]["latency"]["new_tokens"])]
            cells += [_mean_std([r["latency"][key] for r in runs]) for key in ("median_ms", "p90_ms")]
            cells.append(" / ".join(str(r["latency"]["as_used_new_tokens"]) for r in runs))
            cells.append(_mean_std([r["latency"]["as_used_median_ms"] for r in runs]))
            lines.append(f"| {label[name]} | {runs[0]['device']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    reports = [json.loads(Path(path).read_text()) for path in args.files]
    print(ablation_tables([r for r in reports if "variant" in r]))


def card(args: argparse.Namespace) -> None:
    from occvla_hf.modeling import OccVLAConfig
    from occvla_hf.training.model_card import ModelCardInfo, render_model_card

    model_dir = Path(args.model)
    run_report = json.loads(Path(args.run).read_text())
    reports = [json.loads(Path(path).read_text()) for path in args.files]
    section = "\n\n".join([
        "## Occupancy ablation (held-out sim scenes)",
        Path(args.setup).read_text().strip(),
        ablation_tables([r for r in reports if "variant" in r]),
        Path(args.findings).read_text().strip(),
    ])  # fmt: skip
    info = ModelCardInfo(training_data="sim", model_name=model_dir.name, datasets=[args.dataset],
                         occupancy_supervision=VARIANTS[run_report["variant"]][0] == OCC_RECIPE)  # fmt: skip
    rendered = render_model_card(info, config=OccVLAConfig.from_pretrained(model_dir), repo_id=args.repo_id,
                                 log_history=run_report["train_log"], extra_sections=section)  # fmt: skip
    rendered.save(model_dir / "README.md")
    print(f"wrote {model_dir / 'README.md'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train and evaluate")
    run_parser.add_argument("--data", default=".device_data", help="folder with train/ and eval/ dataset folders")
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["occ", "no_occ"])
    run_parser.add_argument("--vae", default=None, help="a trained stage-1 VAE folder (default: train one)")
    run_parser.add_argument("--runs", default="runs/ablation", help="where checkpoints are written")
    run_parser.add_argument("--parallel", type=int, default=2, help="training processes at a time")
    run_parser.add_argument("--vae-overrides", default="",
                            help="recipe overrides of stage 1, e.g. '--training.max_steps 10'")
    run_parser.add_argument("--joint-overrides", default="", help="recipe overrides of both stage-2 recipes")
    run_parser.add_argument("--out", required=True, help="folder for the per-run JSON reports and logs")
    run_parser.set_defaults(func=run)
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
    card_parser.add_argument("--repo-id", default=None, help="path or Hub id in the card's usage snippet")
    card_parser.add_argument("files", nargs="+", help="the per-run JSON reports")
    card_parser.set_defaults(func=card)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.func(args)


if __name__ == "__main__":
    main()
