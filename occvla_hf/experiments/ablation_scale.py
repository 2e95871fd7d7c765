"""The occupancy ablation at scale: does implicit occupancy supervision help a model that can see objects?

    python -m occvla_hf.experiments.ablation_scale prepare --sim SIM_DIR --generate --workers 16 --out .scale_data
    python -m occvla_hf.experiments.ablation_scale run --data .scale_data --variants occ no_occ --seeds 0 1 2 \
        --out benchmarks/results/ablation_scale
    python -m occvla_hf.experiments.ablation_scale report benchmarks/results/ablation_scale/*.json

Data (`prepare`): the `scale` sim preset (400 x 225 px, 20 s scenes; its train split trains, its val split is the
validation range on which settings are chosen) and the `scale_heldout` preset (40 scenes of another master seed,
touched only for the final tables), written as SIM_DIR/train and SIM_DIR/eval with `--generate` (or read from there),
built into `--out`: `train/` (planning, qa, occupancy of every split), `val/` (the val split alone), `eval/` (the
held-out scenes), and `train_10pct/`, the label-scarce copy of `train/` (`label_scarcity`: the planning and QA labels
of 10 % of the training scenes; every planning row stays, marked `labelled`, with the labels of the other scenes
blanked; occupancy of every keyframe). Images stay in the dataroots (`image_mode="path"`).

Variants (`VARIANTS`, recipe overrides of `configs/scale_joint.yaml`): `occ`, `no_occ`, `occ_xattn` (the paper's
occupancy transformer, `occupancy_module: cross_attention`), `occ_10pct` / `no_occ_10pct` (trained on
`train_10pct/`), `occ_w<λ>`, the λ_occ (`occupancy_loss_weight`) sweep, and the planner variants: `occ_reasoning`
(reasoning + meta-action as the planning target), `occ_after_text` (that, with the trajectory read after the
generated text), `occ_history` (2 s of ego history to the head), `occ_no_ego` (no ego status; its pair
`no_occ_no_ego`, where the planner must read the scene) and `occ_history_no_ego` / `no_occ_history_no_ego` (the
history instead of the ego status: the speed from past positions, the rest from the images). `run` trains and
evaluates them like `occupancy_ablation` (the same runner, stage 1 included): one JSON per run with the keys of
`benchmarks/results/ablation_occupancy/` plus `planning_hard`, planning on the **hard subset** of the held-out
keyframes (`evaluation.baselines.hard_keyframes`: logged future more than 1 m from constant velocity), also in
`constant_velocity.json`. `--held-out val` evaluates on the validation range instead.

On `train_10pct/` the joint recipe (`training.joint.JointDataset`) trains the unlabelled planning rows for occupancy
only when it supervises occupancy: `occ_10pct` has occupancy targets on every training keyframe (but the last of
each labelled scene, which has no future) and task targets on the labelled 10 %; `no_occ_10pct` leaves the
unlabelled rows out and trains on exactly the labelled rows. Both sample the labelled rows alike, so over the same
steps each is seen equally often; in `occ_10pct` each labelled planning row brings one occupancy-only row into its
batch. Both fit the ego-status statistics on every keyframe (an input, not a label), so both start from the same
model. Each training log's `training rows` line gives the counts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from occvla_hf.constants import OCC_CLASS_NAMES, OCC_FREE_CLASS
from occvla_hf.data.schema import labelled_mask
from occvla_hf.evaluation.baselines import HARD_DEVIATION_M, hard_keyframes
from occvla_hf.experiments.label_scarcity import LABEL_FRACTION, LABEL_SEED, label_scarce_configs
from occvla_hf.experiments.occupancy_ablation import (
    CV_VARIANT,
    HELD_OUT_DIR,
    Variant,
    ablation_tables,
    add_run_arguments,
    baseline_table,
    held_out_rows,
    mean_std,
    planning_tables,
    read_reports,
    run_ablation,
    runs_by_variant,
    velocity_keyframes,
)
from occvla_hf.modeling.loss import LOSS_TERMS, OCCUPANCY_LOSS_TERMS
from occvla_hf.training.trainer import GRADIENT_NORM_PREFIX

SCALE_RECIPE: str = "configs/scale_joint.yaml"
SCALE_VAE_RECIPE: str = "configs/scale_vae.yaml"
TRAIN_PRESET: str = "scale"
HELD_OUT_PRESET: str = "scale_heldout"
TRAIN_DIR: str = "train"
VALIDATION_DIR: str = "val"
LABEL_SCARCE_DIR: str = "train_10pct"
LAMBDA_OCC_SWEEP: tuple[float, ...] = (0.1, 0.3, 3.0, 10.0)
_NO_OCC: tuple[str, ...] = ("--occupancy_supervision", "false")
_HISTORY: tuple[str, ...] = ("--model.config.ego_history_steps", "4")
_HISTORY_NO_EGO: tuple[str, ...] = (*_HISTORY, "--model.config.use_ego_status", "false")

VARIANTS: dict[str, Variant] = {
    "occ": Variant(SCALE_RECIPE, (), "with occupancy"),
    "no_occ": Variant(SCALE_RECIPE, _NO_OCC, "without occupancy"),
    "occ_xattn": Variant(
        SCALE_RECIPE, ("--model.config.occupancy_module", "cross_attention"), "occupancy, cross-attention module"
    ),
    "occ_10pct": Variant(SCALE_RECIPE, (), "with occupancy, 10 % of the labels", train_data=LABEL_SCARCE_DIR),
    "no_occ_10pct": Variant(
        SCALE_RECIPE, _NO_OCC, "without occupancy, 10 % of the labels", train_data=LABEL_SCARCE_DIR
    ),
    # Reasoning supervision and the planner's inputs (each with occupancy, one setting changed):
    "occ_reasoning": Variant(
        SCALE_RECIPE, ("--planning_target", "reasoning"), "occupancy, reasoning + meta-action target"
    ),
    "occ_after_text": Variant(
        SCALE_RECIPE,
        ("--planning_target", "reasoning", "--model.config.trajectory_position", "after_text"),
        "occupancy, reasoning, trajectory after the text",
    ),
    "occ_history": Variant(SCALE_RECIPE, _HISTORY, "occupancy, 2 s ego history"),
    "occ_no_ego": Variant(SCALE_RECIPE, ("--model.config.use_ego_status", "false"), "occupancy, no ego status"),
    # Its pair: without ego status the planner has to read the scene, where occupancy supervision can matter.
    "no_occ_no_ego": Variant(
        SCALE_RECIPE, (*_NO_OCC, "--model.config.use_ego_status", "false"), "without occupancy, no ego status"
    ),
    # Without ego status and history the planner cannot know its speed (one frame); the 2 s of past positions give
    # it, so the scene is what is left to read.
    "occ_history_no_ego": Variant(SCALE_RECIPE, _HISTORY_NO_EGO, "occupancy, 2 s ego history, no ego status"),
    "no_occ_history_no_ego": Variant(
        SCALE_RECIPE, (*_NO_OCC, *_HISTORY_NO_EGO), "without occupancy, 2 s ego history, no ego status"
    ),
    **{
        f"occ_w{weight:g}": Variant(
            SCALE_RECIPE, ("--model.config.occupancy_loss_weight", str(weight)), f"occupancy, λ_occ {weight:g}"
        )
        for weight in LAMBDA_OCC_SWEEP
    },
}
# (with occupancy, without): variants that differ only in occupancy supervision, compared seed by seed.
OCCUPANCY_PAIRS: tuple[tuple[str, str], ...] = (
    ("occ", "no_occ"),
    ("occ_no_ego", "no_occ_no_ego"),
    ("occ_history_no_ego", "no_occ_history_no_ego"),
    ("occ_10pct", "no_occ_10pct"),
)


def _mean_per_step(name: str) -> Callable[[dict[str, Any]], float | None]:
    """The mean over the waypoints of the planning report's per-step `name`; None in a report without it (runs
    evaluated before the planning report had it)."""

    def metric(report: dict[str, Any]) -> float | None:
        values = report["planning"].get("per_step", {}).get(name)
        return None if values is None else float(np.mean(values))

    return metric


# (column, metric of a per-run report, whether lower is better) of the paired table.
PAIRED_METRICS: tuple[tuple[str, Callable[[dict[str, Any]], float | None], bool], ...] = (
    ("ST-P3 L2 avg, all (m)", lambda r: r["planning"]["stp3"]["l2_avg_m"], True),
    ("ST-P3 L2 avg, hard (m)", lambda r: r["planning_hard"]["stp3"]["l2_avg_m"], True),
    ("UniAD L2 avg, all (m)", lambda r: r["planning"]["uniad"]["l2_avg_m"], True),
    ("longitudinal error, mean of 6 steps (m)", _mean_per_step("longitudinal_abs_m"), True),
    ("lateral error, mean of 6 steps (m)", _mean_per_step("lateral_abs_m"), True),
    ("ST-P3 Col. avg, all (%)", lambda r: r["planning"]["stp3"]["collision_avg_pct"], True),
    ("QA overall (%)", lambda r: r["qa"]["overall"]["accuracy_pct"], False),
)
# The occupancy classes of the per-class table (every class but `free`).
OCCUPIED_CLASSES: tuple[str, ...] = tuple(name for i, name in enumerate(OCC_CLASS_NAMES) if i != OCC_FREE_CLASS)


def hard_subset(rows: Dataset) -> Dataset:
    """The planning rows of the hard subset (`evaluation.baselines.hard_keyframes`)."""
    columns = rows.select_columns(["trajectory", "trajectory_mask", "ego_status", "ego_status_valid"])
    arrays = columns.with_format("numpy")[:]
    hard = hard_keyframes(
        arrays["trajectory"], arrays["trajectory_mask"], arrays["ego_status"], arrays["ego_status_valid"]
    )
    return rows.select(np.flatnonzero(hard))


PLANNING_SUBSETS: dict[str, Callable[[Dataset], Dataset]] = {
    "planning_with_velocity": velocity_keyframes,
    "planning_hard": hard_subset,
}


# ------------------------------------------------------------------------------------------------------ data


def _save(configs: Mapping[str, DatasetDict], out: Path, version: str) -> None:
    from occvla_hf.data.hub import save_dataset

    save_dataset(dict(configs), out, version=version, image_mode="path")
    print(
        out.name, {config: {split: len(rows) for split, rows in splits.items()} for config, splits in configs.items()}
    )


def prepare(args: argparse.Namespace) -> None:
    """Generates (with `--generate`) and builds the datasets of the module docstring."""
    from occvla_hf.data.hub import build_dataset
    from occvla_hf.sim import PRESETS, generate_dataset

    sim, out = Path(args.sim), Path(args.out)
    for name, preset in ((TRAIN_DIR, TRAIN_PRESET), (HELD_OUT_DIR, HELD_OUT_PRESET)):
        if args.generate:
            summary = generate_dataset(sim / name, preset=preset, num_workers=args.workers, overwrite=args.overwrite)
            print(f"{name}: {summary.num_scenes} scenes, {summary.num_samples} keyframes in {summary.seconds:.0f} s")
        root = sim / name
        version = args.version or PRESETS[preset].version
        built = build_dataset(
            root,
            version,
            occ3d_root=root / "gts",
            qa_root=root / "nuscenes_qa",
            image_mode="path",
            cache_dir=out / "cache" / name,
            scenes_per_chunk=args.scenes_per_chunk,
            num_proc=args.workers,
        )
        _save(built, out / name, version)
        if name == TRAIN_DIR:
            validation = {
                config: DatasetDict({args.validation_split: splits[args.validation_split]})
                for config, splits in built.items()
                if args.validation_split in splits
            }
            _save(validation, out / VALIDATION_DIR, version)
            scarce = label_scarce_configs(built, args.train_split, fraction=args.label_fraction, seed=args.label_seed)
            labelled = labelled_mask(scarce["planning"][args.train_split])
            print(f"{LABEL_SCARCE_DIR}: {int(labelled.sum())} of {len(labelled)} {args.train_split} keyframes labelled")
            _save(scarce, out / LABEL_SCARCE_DIR, version)


def check_hard_subset(data_dir: Path, held_out: str) -> None:
    """ValueError before any training when the held-out planning rows have no hard keyframe to report on."""
    hard = hard_subset(held_out_rows(data_dir, "planning", held_out))
    if len(hard) == 0:
        raise ValueError(
            f"{data_dir / held_out}: no keyframe departs from constant velocity by more than {HARD_DEVIATION_M} m "
            "(the hard subset is empty)"
        )
    print(f"hard subset: {len(hard)} held-out keyframes", flush=True)


def run(args: argparse.Namespace) -> None:
    variants = {name: replace(variant, recipe=args.recipe) for name, variant in VARIANTS.items()}
    check_hard_subset(Path(args.data), args.held_out)
    run_ablation(variants, args, vae_recipe=args.vae_recipe, subsets=PLANNING_SUBSETS)


# ----------------------------------------------------------------------------------------------------- tables


def per_class_iou_table(runs: Mapping[str, Sequence[dict[str, Any]]], variants: Mapping[str, Variant]) -> list[str]:
    """Per-class IoU (camera mask) of the occupancy decoded from the queries."""
    with_occupancy = {name: named for name, named in runs.items() if all(r.get("occupancy") for r in named)}
    if not with_occupancy:
        return []
    lines = [
        "Query occupancy per class, held-out keyframes, camera mask (IoU %, mean ± std over runs)",
        "",
        "| Variant | " + " | ".join(OCCUPIED_CLASSES) + " |",
        "|---" * (1 + len(OCCUPIED_CLASSES)) + "|",
    ]
    for name, named_runs in with_occupancy.items():
        cells = [
            mean_std([_finite_pct(r["occupancy"][f"camera_iou_{c}"]) for r in named_runs]) for c in OCCUPIED_CLASSES
        ]
        lines.append(f"| {variants[name].label} | " + " | ".join(cells) + " |")
    return [*lines, "", "-: the class is absent from the held-out labels (its IoU is undefined)."]


def _finite_pct(value: float) -> float | None:
    """`value` in %, None where it is NaN (an IoU over no voxel of either kind)."""
    return None if np.isnan(value) else 100.0 * value


def paired_difference_table(
    runs: Mapping[str, Sequence[dict[str, Any]]],
    variants: Mapping[str, Variant],
    pairs: Sequence[tuple[str, str]] = OCCUPANCY_PAIRS,
) -> list[str]:
    """Per pair of `pairs` with runs of the same seeds: the per-seed difference (with - without occupancy) of each
    `PAIRED_METRICS` metric, mean ± sample std over those seeds (3 decimals: the effects are small), and in how many
    of the seeds occupancy supervision came out better; `-` where a run's report lacks the metric."""
    lines = []
    for with_name, without_name in pairs:
        seeds, with_runs, without_runs = _paired_seeds(runs, with_name, without_name)
        if not seeds:
            continue
        cells = []
        for _, metric, lower_is_better in PAIRED_METRICS:
            pairs_of_values = [(metric(with_runs[s]), metric(without_runs[s])) for s in seeds]
            if any(value is None for pair in pairs_of_values for value in pair):
                cells.append("-")
                continue
            differences = np.array([with_value - without for with_value, without in pairs_of_values])
            better = int(np.sum(differences < 0 if lower_is_better else differences > 0))
            spread = f" ± {np.std(differences, ddof=1):.3f}" if len(seeds) > 1 else ""
            cells.append(f"{np.mean(differences):+.3f}{spread} ({better}/{len(seeds)})")
        seed_list = ", ".join(str(s) for s in seeds)
        lines.append(
            f"| {variants[with_name].label} - {variants[without_name].label} | {seed_list} | "
            + " | ".join(cells)
            + " |"
        )
    if not lines:
        return []
    header = [
        "Paired by seed: with minus without occupancy supervision (mean ± sample std over the seeds; in brackets, "
        "the seeds in which supervision came out better)",
        "",
        "| Pair | seeds | " + " | ".join(column for column, _, _ in PAIRED_METRICS) + " |",
        "|---" * (2 + len(PAIRED_METRICS)) + "|",
    ]
    return [*header, *lines, ""]


def _paired_seeds(
    runs: Mapping[str, Sequence[dict[str, Any]]], with_name: str, without_name: str
) -> tuple[list[int], dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The seeds that both variants of a pair ran, and each variant's runs by seed; a pair compares one run per seed,
    so two reports of one variant and seed (a rerun) are an error, not a silent choice."""
    by_seed = []
    for name in (with_name, without_name):
        seeds = [r["seed"] for r in runs.get(name, ())]
        reruns = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if reruns:
            raise ValueError(
                f"files: {name} has more than one report of seed(s) {reruns}; pairing by seed takes one run per seed "
                "(pass one of them)"
            )
        by_seed.append({r["seed"]: r for r in runs.get(name, ())})
    with_runs, without_runs = by_seed
    return sorted(set(with_runs) & set(without_runs)), with_runs, without_runs


def paired_meta_action_table(
    runs: Mapping[str, Sequence[dict[str, Any]]],
    variants: Mapping[str, Variant],
    pairs: Sequence[tuple[str, str]] = OCCUPANCY_PAIRS,
) -> list[str]:
    """Where a pair's difference comes from: per logged meta-action of the held-out keyframes (`by_meta_action` of
    the planning report), the ST-P3 L2 avg without supervision and the seed-paired difference (with - without),
    for the pairs with at least two common seeds."""
    lines = []
    for with_name, without_name in pairs:
        seeds, with_runs, without_runs = _paired_seeds(runs, with_name, without_name)
        if len(seeds) < 2:
            continue
        lines += [
            f"Paired by seed and logged meta-action: {variants[with_name].label} minus {variants[without_name].label}, "
            f"ST-P3 L2 avg in m (seeds {', '.join(map(str, seeds))}; mean ± sample std; in brackets, the seeds in "
            "which supervision came out better)",
            "",
            "| meta-action | keyframes | without | difference |",
            "|---|---|---|---|",
        ]
        for action, group in without_runs[seeds[0]]["planning"]["by_meta_action"].items():

            def l2(run: dict[str, Any], action: str = action) -> float:
                return run["planning"]["by_meta_action"][action]["stp3"]["l2_avg_m"]

            differences = np.array([l2(with_runs[s]) - l2(without_runs[s]) for s in seeds])
            without = np.mean([l2(without_runs[s]) for s in seeds])
            better = int(np.sum(differences < 0))
            lines.append(
                f"| {action} | {group['num_samples']} | {without:.3f} | {np.mean(differences):+.3f} ± "
                f"{np.std(differences, ddof=1):.3f} ({better}/{len(seeds)}) |"
            )
        lines.append("")
    return lines


# (report key, feature set, column) of the probe table: the scene in the image features, the lead vehicle in the
# state that plans.
PROBE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cars_per_camera", "vision", "cars per camera, vision-tower features"),
    ("cars_per_camera", "lm_image", "cars per camera, LM image tokens"),
    ("lead_distance_m", "traj", "lead-vehicle distance, `<traj>` state"),
)


def probe_table(runs: Mapping[str, Sequence[dict[str, Any]]], variants: Mapping[str, Variant]) -> list[str]:
    """R^2 of each run's ridge probes (`probes`, `experiments.probes`) per target and feature set."""
    with_probes = {name: named for name, named in runs.items() if all(r.get("probes") for r in named)}
    if not with_probes:
        return []
    lines = [
        "Linear probes, held-out keyframes (ridge R^2, mean ± std over runs; below 0: worse than predicting the mean)",
        "",
        "| Variant | " + " | ".join(column for _, _, column in PROBE_COLUMNS) + " |",
        "|---" * (1 + len(PROBE_COLUMNS)) + "|",
    ]
    for name, named_runs in with_probes.items():
        cells = []
        for target, features, _ in PROBE_COLUMNS:
            probes = [r["probes"].get(target) for r in named_runs]  # None: too few keyframes to fit the probe
            cells.append(
                mean_std([None if p is None or p.get(features) is None else p[features]["r2"] for p in probes])
            )
        lines.append(f"| {variants[name].label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def occupancy_gradient_shares(train_log: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per logged step (`--gradient_norm_steps`), the occupancy terms' share of the summed per-term gradient norms on
    the shared layers (`OccVLATrainer`'s `grad_norm_<term>`), in %; empty without occupancy terms or such logs."""
    shares = []
    for entry in train_log:
        norms = {term: float(entry[key]) for term in LOSS_TERMS if (key := f"{GRADIENT_NORM_PREFIX}{term}") in entry}
        occupancy = [norms[term] for term in OCCUPANCY_LOSS_TERMS if term in norms]
        total = sum(norms.values())
        if occupancy and total > 0:
            shares.append(100.0 * sum(occupancy) / total)
    return shares


def gradient_share_table(runs: Mapping[str, Sequence[dict[str, Any]]], variants: Mapping[str, Variant]) -> list[str]:
    """The occupancy terms' share of the gradient on the shared layers over training (`occupancy_gradient_shares`
    of each run's `train_log`): median and largest over the logged steps."""
    shares = {name: [occupancy_gradient_shares(r.get("train_log", [])) for r in named] for name, named in runs.items()}
    shares = {name: per_run for name, per_run in shares.items() if all(per_run)}
    if not shares:
        return []
    lines = [
        "Occupancy terms' share of the summed per-term gradient norms on the shared layers (%, mean ± std over runs)",
        "",
        "| Variant | logged steps | median share | largest share |",
        "|---|---|---|---|",
    ]
    for name, per_run in shares.items():
        steps = "/".join(sorted({str(len(run)) for run in per_run}))
        median = mean_std([float(np.median(run)) for run in per_run])
        lines.append(f"| {variants[name].label} | {steps} | {median} | {mean_std([max(run) for run in per_run])} |")
    return [*lines, ""]


def scale_tables(reports: Sequence[dict[str, Any]], variants: Mapping[str, Variant] = VARIANTS) -> str:
    """`occupancy_ablation.ablation_tables`, then planning on the hard subset (models and constant velocity), the
    seed-paired differences (overall and per meta-action), the probes, the occupancy terms' gradient share and the
    queries' per-class IoU."""
    runs = runs_by_variant(reports, variants)
    lines = [ablation_tables(reports, variants), ""]
    lines += planning_tables(runs, variants, "planning_hard", "Planning on the hard subset")
    baseline = [r for r in reports if r["variant"] == CV_VARIANT]
    if baseline:
        keyframes = f"of the hard subset (logged future more than {HARD_DEVIATION_M:g} m from constant velocity)"
        lines += baseline_table(runs, variants, baseline[0], "planning_hard", keyframes)
    lines += [*paired_difference_table(runs, variants), *paired_meta_action_table(runs, variants)]
    lines += probe_table(runs, variants)
    lines += gradient_share_table(runs, variants)
    return "\n".join([*lines, *per_class_iou_table(runs, variants)]).rstrip("\n")


def report(args: argparse.Namespace) -> None:
    print(scale_tables(read_reports(args.files)))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare", help="generate and build the at-scale datasets")
    prepare_parser.add_argument("--sim", required=True, help="folder of the train/ and eval/ sim dataroots")
    prepare_parser.add_argument("--generate", action="store_true", help="generate them first (the scale presets)")
    prepare_parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="sim processes and dataset-building processes"
    )
    prepare_parser.add_argument("--scenes-per-chunk", type=int, default=10, help="scenes per dataset-building chunk")
    prepare_parser.add_argument("--overwrite", action="store_true", help="replace earlier generated dataroots")
    prepare_parser.add_argument("--version", default=None, help="nuScenes version (default: the presets')")
    prepare_parser.add_argument("--train-split", default="train", help="the split thinned in train_10pct/")
    prepare_parser.add_argument("--validation-split", default="val", help="the split copied to val/")
    prepare_parser.add_argument("--label-fraction", type=float, default=LABEL_FRACTION)
    prepare_parser.add_argument("--label-seed", type=int, default=LABEL_SEED)
    prepare_parser.add_argument("--out", required=True)
    prepare_parser.set_defaults(func=prepare)
    run_parser = commands.add_parser("run", help="train and evaluate")
    add_run_arguments(run_parser, VARIANTS, default=["occ", "no_occ"])
    run_parser.add_argument("--recipe", default=SCALE_RECIPE, help="the stage-2 recipe the variants override")
    run_parser.add_argument("--vae-recipe", default=SCALE_VAE_RECIPE, help="the stage-1 recipe (without --vae)")
    run_parser.set_defaults(func=run)
    report_parser = commands.add_parser("report", help="print the tables of per-run JSON reports")
    report_parser.add_argument("files", nargs="+")
    report_parser.set_defaults(func=report)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.func(args)


if __name__ == "__main__":
    main()
