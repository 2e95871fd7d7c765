"""Closed-loop evaluation speed (`occvla_hf.evaluation.closed_loop`): ticks per second and where the time goes.

Part 1 drives one scenario of each of the first `--types` scenario types tick by tick with each planner and splits a
tick into observing (the six cameras rendered at the ego's pose + JPEG + ego status; planners that read no image skip
the cameras), planning and driving (the world stepped to the next tick: behaviour model, tracker, bicycle). Part 2
times `run_closed_loop` end to end on the same scenarios (world building, the expert's reference runs and the
scoring included) as scenarios per minute, with `--batch-size` scenarios batched through the model.

    python benchmarks/bench_closed_loop.py [--types 3] [--device cpu] [--batch-size 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import numpy as np
import PIL
import scipy
import torch
import transformers

from occvla_hf.evaluation.closed_loop import (
    DEFAULT_SIM_CONFIG,
    ConstantVelocityPlanner,
    ExpertPlanner,
    OccVLAPlanner,
    observe,
    run_closed_loop,
)
from occvla_hf.evaluation.runner import load_model_and_processor
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH
from occvla_hf.sim.closed_loop import SCENARIO_TYPES, ClosedLoopWorld, Scenario, build_scenario


def tick_breakdown(planner, scenarios: list[Scenario]) -> dict[str, float]:
    """Seconds spent observing, planning and driving over all ticks of the scenarios (one at a time)."""
    totals = {"ticks": 0, "observe_s": 0.0, "plan_s": 0.0, "drive_s": 0.0, "build_s": 0.0}
    for scenario in scenarios:
        start = time.perf_counter()
        world = ClosedLoopWorld(build_scenario(scenario, DEFAULT_SIM_CONFIG))
        totals["build_s"] += time.perf_counter() - start
        while not world.done:
            t0 = time.perf_counter()
            obs = observe(world, planner.needs_images)
            t1 = time.perf_counter()
            plan = planner.plan([obs])[0]
            t2 = time.perf_counter()
            world.drive(plan)
            t3 = time.perf_counter()
            totals["observe_s"] += t1 - t0
            totals["plan_s"] += t2 - t1
            totals["drive_s"] += t3 - t2
            totals["ticks"] += 1
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, default=3, help="scenario types to drive (one scenario of each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1, help="scenarios per model call in part 2")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scenarios = [Scenario(kind, 0) for kind in list(SCENARIO_TYPES)[: args.types]]
    model, processor = load_model_and_processor(EMBEDDED_MODEL_PATH, device=args.device)
    planners = [ConstantVelocityPlanner(), ExpertPlanner(), OccVLAPlanner(model, processor, name="occvla-sim-small")]
    width, height = DEFAULT_SIM_CONFIG.image_size_px
    print(
        f"{date.today()}  {platform.processor() or platform.machine()}, torch threads {args.threads}, "
        f"device {args.device}; python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"Pillow {PIL.__version__}"
    )
    print(f"scenarios: {', '.join(s.name for s in scenarios)}; cameras {width} x {height} px\n")
    print("| planner | ticks | ticks / s | observe ms / tick | plan ms / tick | drive ms / tick | build s / scenario |")
    print("|---|---|---|---|---|---|---|")
    for planner in planners:
        t = tick_breakdown(planner, scenarios)
        loop_s = t["observe_s"] + t["plan_s"] + t["drive_s"]
        per_tick = {key: 1000.0 * t[key] / t["ticks"] for key in ("observe_s", "plan_s", "drive_s")}
        print(
            f"| {planner.name} | {t['ticks']} | {t['ticks'] / loop_s:.2f} | {per_tick['observe_s']:.1f} | "
            f"{per_tick['plan_s']:.1f} | {per_tick['drive_s']:.1f} | {t['build_s'] / len(scenarios):.2f} |"
        )
    print("\n| planner | batch | scenarios | wall s | scenarios / min (build, expert reference, scoring included) |")
    print("|---|---|---|---|---|")
    for planner in planners:
        batch = args.batch_size if isinstance(planner, OccVLAPlanner) else 1
        start = time.perf_counter()
        run_closed_loop(planner, scenarios, batch_size=batch, progress=False)
        wall = time.perf_counter() - start
        print(f"| {planner.name} | {batch} | {len(scenarios)} | {wall:.1f} | {60.0 * len(scenarios) / wall:.2f} |")


if __name__ == "__main__":
    main()
