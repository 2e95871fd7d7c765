"""CPU cost of OccVLAProcessor on nuScenes-sized camera images (1600 x 900 px), as a data loader worker pays it.

Rows: 1 and 6 views, batch 1 and 8, inference (prompt only) and training (answer, ego status, trajectory and an
Occ3D grid); images as PIL (what `datasets` decodes) or numpy. The image processor is SigLIP at 224 px (the PIL
backend when torchvision is missing). Every number is the median of `--repeats` runs after one warm-up run.

    python benchmarks/bench_processor.py
"""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np
import PIL.Image
import torch
import transformers
from transformers import SiglipImageProcessorPil

from occvla_hf.constants import EGO_STATUS_FEATURES, OCC_GRID_SHAPE
from occvla_hf.evaluation.timing import call_times_ms
from occvla_hf.processing import OccVLAProcessor, build_tokenizer

IMAGE_HW_PX = (900, 1600)


def median_ms(fn, repeats: int) -> float:
    return statistics.median(call_times_ms([fn], repeats=repeats, warmup=1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    tokenizer = build_tokenizer()
    image_processor = SiglipImageProcessorPil(size={"height": 224, "width": 224})
    views = [rng.integers(0, 256, (*IMAGE_HW_PX, 3), dtype=np.uint8) for _ in range(6)]
    pil_views = [PIL.Image.fromarray(view) for view in views]
    print(f"# {platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {type(image_processor).__name__}")  # fmt: skip
    print("| views | batch | mode | images | ms / batch | ms / sample |")
    print("|---|---|---|---|---|---|")
    for num_views in (1, 6):
        processor = OccVLAProcessor(image_processor, tokenizer, num_views=num_views, image_seq_length=256)
        for batch in (1, 8):
            for mode in ("inference", "training"):
                for kind, sample in (("PIL", pil_views[:num_views]), ("numpy", views[:num_views])):
                    kwargs = {"images": [sample] * batch}
                    if mode == "training":
                        kwargs |= {
                            "answer": ["decelerate, left lane change"] * batch,
                            "ego_status": np.zeros((batch, len(EGO_STATUS_FEATURES)), dtype=np.float32),
                            "trajectory": np.zeros((batch, 6, 2), dtype=np.float32),
                            "occupancy": np.zeros((batch, *OCC_GRID_SHAPE), dtype=np.uint8),
                        }
                    ms = median_ms(lambda: processor(**kwargs), args.repeats)  # noqa: B023
                    print(f"| {num_views} | {batch} | {mode} | {kind} | {ms:.1f} | {ms / batch:.1f} |")


if __name__ == "__main__":
    main()
