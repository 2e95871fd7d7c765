"""Where the held-out evaluation of one checkpoint (`experiments.occupancy_ablation.evaluate_run`) spends its time:
each stage run with every row's own images (stage by stage, interleaved) (each evaluation decodes and resizes its rows' views: QA's several
questions per keyframe each again) against the image cache it reads now (views resized once per keyframe), wall and
CPU seconds per stage, and the host-side share: the loader's batches alone (`prepared_batches`, no model).

    python -m occvla_hf.cli sim --preset scale_heldout --scenes 2 --out SIM/eval
    python -m benchmarks.bench_eval_run --model MODEL_DIR --data DATA_DIR [--workers 0]

`DATA_DIR/eval` is the held-out dataset (`ablation_scale prepare`, or `data build` of the sim folder). Both paths'
reports are compared (latency left out: timings) and must be equal.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from occvla_hf.data.keyframes import join_keyframes
from occvla_hf.evaluation.runner import (
    _occupancy_inputs,
    _planning_inputs,
    evaluate_occupancy,
    evaluate_planning,
    evaluate_qa,
    load_model_and_processor,
    prepared_batches,
)
from occvla_hf.experiments.ablation_scale import PLANNING_SUBSETS
from occvla_hf.experiments.occupancy_ablation import EVAL_BATCH_SIZES, held_out_occupancy_rows, held_out_rows
from occvla_hf.experiments.probes import probe_report
from occvla_hf.training.image_cache import open_image_cache


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """`call()`, its wall and CPU (this process) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    model, processor = load_model_and_processor(args.model)
    data = Path(args.data)
    planning = held_out_rows(data, "planning")
    occupancy = held_out_occupancy_rows(data, planning)
    qa = held_out_rows(data, "qa")
    workers = args.workers
    subsets = {key: select(planning)["sample_token"] for key, select in PLANNING_SUBSETS.items()}
    print(f"{len(planning)} keyframes, {len(qa)} questions, {sum(p.numel() for p in model.parameters())} parameters")

    def stages(images) -> dict[str, Callable[[], Any]]:
        qa_rows = qa if images is not None else join_keyframes(qa, planning)
        batch = EVAL_BATCH_SIZES
        planning_inputs = partial(_planning_inputs, processor)
        qa_inputs = partial(processor.from_rows, task="qa", training=False)
        occupancy_inputs = partial(_occupancy_inputs, processor)
        return {
            "planning": lambda: evaluate_planning(
                model,
                processor,
                planning,
                batch_size=batch["planning"],
                subsets=subsets,
                num_workers=workers,
                images=images,
            ),
            "qa": lambda: evaluate_qa(
                model, processor, qa_rows, batch_size=batch["qa"], num_workers=workers, images=images
            ),
            "occupancy": lambda: evaluate_occupancy(
                model, processor, occupancy, batch_size=batch["occupancy"], num_workers=workers, images=images
            ),
            "probes": lambda: probe_report(model, processor, planning, num_workers=workers, images=images),
            "loader planning": lambda: list(
                prepared_batches(planning, batch["planning"], planning_inputs, num_workers=workers, images=images)
            ),
            "loader qa": lambda: list(
                prepared_batches(qa_rows, batch["qa"], qa_inputs, num_workers=workers, images=images)
            ),
            "loader occupancy": lambda: list(
                prepared_batches(occupancy, batch["occupancy"], occupancy_inputs, num_workers=workers, images=images)
            ),
        }

    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        cache, wall, cpu = timed(lambda: open_image_cache([planning], processor, folder, num_workers=workers))
        print(f"image cache build: {wall:.1f} s wall, {cpu:.1f} s CPU")
        paths = {"images": stages(None), "cache": stages(cache)}
        reports: dict[str, dict[str, Any]] = {path: {} for path in paths}
        for name in paths["images"]:  # the two paths stage by stage, under the same load of the machine
            for path, calls in paths.items():
                out, wall, cpu = timed(calls[name])
                if not name.startswith("loader"):
                    reports[path][name] = out
                print(f"{name:<17} {path:>6} {wall:7.1f} s wall {cpu:7.1f} s CPU", flush=True)
    print("reports equal:", reports["images"] == reports["cache"])


if __name__ == "__main__":
    main()
