"""`occvla-hf eval planning|qa|occupancy|closed-loop` and `occvla-hf plan`: thin layers over `evaluation.runner`,
`evaluation.closed_loop` and `plots`.

Registering the commands imports nothing heavy; each command imports torch, the data and the metrics when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from occvla_hf.cli import model_argument

from ..constants import PLANNING_NORMALIZATIONS, PLANNING_PROTOCOL_NAMES

# The baseline row of the planning tables and its key under the report's "baselines" (`runner.evaluate_constant_velocity`).
CONSTANT_VELOCITY = "constant velocity"
SPLIT_HELP = "dataset split (default: its validation split, val or mini_val)"
# --dtype choice -> torch dtype name.
DTYPES: dict[str, str] = {"bf16": "bfloat16", "fp32": "float32"}
# `plan --occupancy`: the row's Occ3D labels, or the model's own prediction.
OCCUPANCY_LAYERS: tuple[str, ...] = ("gt", "pred")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` and `plan` commands."""
    evaluate = subparsers.add_parser("eval", help="evaluate a checkpoint: planning, QA, occupancy or closed loop")
    tasks = evaluate.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in ("planning", "qa", "occupancy"):
        _add_open_loop_task(tasks.add_parser(task, help=f"{task} metrics on a dataset split"))
    _add_closed_loop_task(tasks.add_parser("closed-loop", help="drive the sim's scenarios: PDMS, driving score"))

    plan = subparsers.add_parser("plan", help="plan one sample and draw it (BEV + six cameras)")
    _add_model_and_data(plan)
    plan.add_argument("--split", help=SPLIT_HELP)
    plan.add_argument("--sample", required=True, help="sample token, or the row index in the split")
    plan.add_argument("--out", required=True, help="PNG path of the BEV picture; the camera mosaic goes next to it")
    plan.add_argument(
        "--occupancy",
        choices=OCCUPANCY_LAYERS,
        help="occupancy under the BEV: gt (the keyframe's Occ3D grid from the occupancy config, inside its camera "
        "mask) or pred (decoded from the model's occupancy queries by its frozen VAE)",
    )
    plan.set_defaults(func=_run_plan)


def _add_open_loop_task(evaluate: argparse.ArgumentParser) -> None:
    _add_model_and_data(evaluate)
    evaluate.add_argument("--split", help=SPLIT_HELP)
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument(
        "--num-workers", type=int, default=0, help="loader processes that decode and tokenize the next batches"
    )
    evaluate.add_argument(
        "--no-ego-status",
        action="store_true",
        help="state that the model plans without ego status (its config must say so); recorded in the report",
    )
    evaluate.add_argument(
        "--normalization",
        choices=PLANNING_NORMALIZATIONS,
        default=PLANNING_NORMALIZATIONS[0],
        help="planning: divide per-step values by the valid steps (default) or by all samples (UniAD's tables)",
    )
    evaluate.add_argument("--report", help="JSON report path (default: ./eval_<task>_<split>.json)")
    evaluate.set_defaults(func=_run_eval)


def _add_closed_loop_task(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="OccVLA checkpoint folder or Hub id (model + processor); the planner by default"
    )
    parser.add_argument(
        "--planner",
        choices=["model", "constant-velocity", "expert"],
        default="model",
        help="who drives: the --model checkpoint, constant velocity, or the sim's privileged expert",
    )
    parser.add_argument("--scenarios", default="all", help="'all' or one scenario type (see the docs for the list)")
    parser.add_argument("--per-type", type=int, default=6, help="scenarios per type (6: the standard set)")
    parser.add_argument("--seed", type=int, default=0, help="scenario seed (0: the standard set)")
    parser.add_argument("--non-reactive", action="store_true", help="agents replay their log instead of reacting")
    parser.add_argument("--out", required=True, help="folder of the JSON report and the per-scenario GIFs")
    parser.add_argument("--no-video", action="store_true", help="skip the per-scenario GIFs")
    parser.add_argument(
        "--open-loop-l2", action="store_true", help="also the planner's open-loop L2 along the expert's drives"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="scenarios per planner call")
    parser.add_argument("--device", help="torch device of the model (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    parser.set_defaults(func=_run_closed_loop)


def _run_closed_loop(args: argparse.Namespace) -> int:
    from occvla_hf.sim.closed_loop import SCENARIO_TYPES, standard_scenarios

    from .closed_loop import ConstantVelocityPlanner, ExpertPlanner, OccVLAPlanner, evaluate_closed_loop

    if args.scenarios != "all" and args.scenarios not in SCENARIO_TYPES:
        raise SystemExit(f"--scenarios: expected 'all' or one of {', '.join(SCENARIO_TYPES)}; got {args.scenarios!r}")
    if args.per_type < 1:
        raise SystemExit(f"--per-type: expected >= 1, got {args.per_type}")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size: expected >= 1, got {args.batch_size}")
    if args.planner == "model":
        if args.model is None:
            raise SystemExit("--model: required to drive with the model (or pass --planner constant-velocity|expert)")
        model, processor = _load(args)
        planner = OccVLAPlanner(model, processor, name=Path(str(args.model)).name)
    elif args.model is not None:
        raise SystemExit(f"--model: not used with --planner {args.planner}; give one or the other")
    else:
        planner = ConstantVelocityPlanner() if args.planner == "constant-velocity" else ExpertPlanner()
    types = None if args.scenarios == "all" else (args.scenarios,)
    _, table, path = evaluate_closed_loop(
        planner,
        standard_scenarios(args.seed, types, args.per_type),
        reactive=not args.non_reactive,
        seed=args.seed,
        scenario_filter=args.scenarios,
        out_dir=args.out,
        videos=not args.no_video,
        batch_size=args.batch_size,
        with_open_loop=args.open_loop_l2,
    )
    print(table)
    print(f"report: {path}")
    return 0


def _add_model_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, type=model_argument, help="OccVLA checkpoint folder or Hub id (model + processor)"
    )
    parser.add_argument("--data", required=True, help="dataset folder written by `occvla-hf data build`")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on GPU, fp32 on CPU")


def _load_split(args: argparse.Namespace, config: str):
    """(split name, rows) of `--data`, `--split` (default: the validation split); QA rows with their images."""
    from ..data.load import load_named_split

    return load_named_split(args.data, config, args.split)


def _load(args: argparse.Namespace):
    import torch

    from .runner import load_model_and_processor

    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    return load_model_and_processor(args.model, device=args.device, dtype=dtype)


def _run_eval(args: argparse.Namespace) -> int:
    from . import runner
    from .planning import format_planning_table
    from .qa import format_qa_table

    model, processor = _load(args)
    if args.no_ego_status and model.config.use_ego_status:
        raise SystemExit("--no-ego-status: this model was trained with ego status (config.use_ego_status=True)")
    split, dataset = _load_split(args, args.task)
    baselines = {}
    if args.task == "planning":
        metrics = runner.evaluate_planning(
            model,
            processor,
            dataset,
            batch_size=args.batch_size,
            normalization=args.normalization,
            num_workers=args.num_workers,
        )
        baselines[CONSTANT_VELOCITY] = runner.evaluate_constant_velocity(dataset, normalization=args.normalization)
        name = Path(str(args.model)).name + ("" if model.config.use_ego_status else " (no ego status)")
        table = "\n\n".join(
            format_planning_table(
                {name: metrics[protocol], CONSTANT_VELOCITY: baselines[CONSTANT_VELOCITY][protocol]},
                title=f"{label} protocol",
            )
            for protocol, label in PLANNING_PROTOCOL_NAMES.items()
        )
        table += f"\nmeta-action accuracy: {metrics['meta_action_accuracy_pct']:.1f}%"
    elif args.task == "qa":
        metrics = runner.evaluate_qa(
            model, processor, dataset, batch_size=args.batch_size, num_workers=args.num_workers
        )
        table = format_qa_table({Path(str(args.model)).name: metrics})
    else:
        metrics = runner.evaluate_occupancy(
            model, processor, dataset, batch_size=args.batch_size, num_workers=args.num_workers
        )
        table = "\n".join(f"{key}: {value:.2f}" for key, value in metrics.items() if not key.startswith("iou_"))
    report = {
        "task": args.task,
        "model": str(args.model),
        "data": str(args.data),
        "split": split,
        "num_rows": len(dataset),
        "use_ego_status": model.config.use_ego_status,
        "dtype": str(model.dtype),
        "metrics": metrics,
        **({"baselines": baselines} if baselines else {}),
    }
    path = Path(args.report) if args.report else Path(f"eval_{args.task}_{split}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    print(f"report: {path}")
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..class_labels import label_name
    from .planning import evaluate_planning_sample
    from .plots import plot_camera_mosaic, plot_plan_bev, save_png
    from .runner import model_inputs, row_agents

    model, processor = _load(args)
    split, dataset = _load_split(args, "planning")
    row = dataset[_row_index(dataset, args.sample, split)]
    inputs = processor.from_rows([row], task="planning", training=False)
    with torch.inference_mode():
        plan = model.plan(**model_inputs(inputs, model), tokenizer=processor.tokenizer)
    pred = plan.trajectory[0].float().cpu().numpy()
    gt, mask = np.asarray(row["trajectory"], np.float32), np.asarray(row["trajectory_mask"], bool)
    result = evaluate_planning_sample(pred, gt, mask, **row_agents(row))
    semantics, visible_mask = _occupancy_layer(args, model, processor, row, split)
    out = Path(args.out)
    bev = plot_plan_bev(row, pred, result, plan.meta_action[0], semantics=semantics, visible_mask=visible_mask)
    save_png(bev, out)
    cameras = out.with_name(f"{out.stem}_cameras{out.suffix}")
    save_png(
        plot_camera_mosaic(
            row["images"],
            camera_intrinsics=np.asarray(row["camera_intrinsics"]),
            camera_to_ego=np.asarray(row["camera_to_keyframe_ego"]),
            pred_trajectory=pred,
            gt_trajectory=gt,
            trajectory_mask=mask,
        ),
        cameras,
    )
    l2 = np.linalg.norm(pred - gt, axis=-1)[mask]
    truth = label_name("meta_action", row["meta_action"])  # a built dataset stores the class id
    print(f"meta-action: {plan.meta_action[0]!r} (ground truth {truth!r})")
    print("trajectory (m): " + " ".join(f"({x:.2f},{y:.2f})" for x, y in pred))
    print(f"mean L2 over valid steps: {l2.mean():.2f} m" if l2.size else "no valid ground-truth step")
    print(f"wrote {out} and {cameras}")
    return 0


def _row_index(dataset, sample: str, split: str) -> int:
    """The row of `--sample` (a row index or a sample token) in the split."""
    if sample.isdigit():
        index = int(sample)
    else:
        tokens = dataset["sample_token"]
        if sample not in tokens:
            raise SystemExit(f"--sample: no row with sample token {sample!r} in split {split!r}")
        index = tokens.index(sample)
    if not 0 <= index < len(dataset):
        raise SystemExit(f"--sample: row index {index} outside [0, {len(dataset)})")
    return index


def _occupancy_layer(args: argparse.Namespace, model, processor, row: dict, split: str):
    """(semantics (X, Y, Z), visible mask or None) of `--occupancy`, or (None, None) without it."""
    if args.occupancy is None:
        return None, None
    if args.occupancy == "pred":
        from .runner import predict_occupancy

        return predict_occupancy(model, processor, [row["images"]])[0].numpy(), None
    from ..data.load import load_configs
    from ..data.occ3d import decode_mask, decode_semantics

    splits = load_configs(args.data, ["occupancy"])["occupancy"]
    if split not in splits:
        raise SystemExit(f"--occupancy gt: the occupancy config of {args.data!r} has no split {split!r}")
    tokens = splits[split]["sample_token"]
    if row["sample_token"] not in tokens:
        raise SystemExit(f"--occupancy gt: keyframe {row['sample_token']!r} has no Occ3D labels in split {split!r}")
    labels = splits[split][tokens.index(row["sample_token"])]
    return decode_semantics(labels["semantics"]), decode_mask(labels["mask_camera"])
