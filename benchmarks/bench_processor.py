"""CPU cost of OccVLAProcessor on nuScenes-sized camera images (1600 x 900 px), as a data loader worker pays it.

Rows: 1 and 6 views, batch 1 and 8, inference (prompt only) and training (answer, ego status, trajectory and an
Occ3D grid); images as PIL (what `datasets` decodes) or numpy. The image processor is SigLIP at 224 px (the PIL
backend when torchvision is missing). Every number is the median of `--repeats` runs after one warm-up run.
A second table times a training loader's batch at the at-scale shape (64 planning rows of six 400 x 225 JPEG views,
`from_rows`) with the images normalised in the loader, resized only (uint8) with the normalisation (`normalize_pixels`)
timed apart, as the trainer runs it on the device with `normalize_images_on_device`, and from views resized once
(what `training.image_cache` serves).

    python benchmarks/bench_processor.py
"""

from __future__ import annotations

import argparse
import io
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
SCALE_IMAGE_HW_PX = (225, 400)
LOADER_BATCH = 64


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
    loader_table(image_processor, tokenizer, rng, args.repeats)


def jpeg(rng: np.random.Generator) -> bytes:
    """The bytes of a 400 x 225 JPEG camera view (decoded per batch, as a loader reads an image column)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (*SCALE_IMAGE_HW_PX, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def loader_table(image_processor, tokenizer, rng: np.random.Generator, repeats: int) -> None:
    processor = OccVLAProcessor(image_processor, tokenizer, num_views=6, image_seq_length=196)
    encoded = [[jpeg(rng) for _ in range(6)] for _ in range(LOADER_BATCH)]
    row = {
        "ego_status": np.zeros(len(EGO_STATUS_FEATURES), dtype=np.float32),
        "ego_status_valid": [True] * len(EGO_STATUS_FEATURES),
        "trajectory": np.zeros((6, 2), dtype=np.float32),
        "trajectory_mask": [True] * 6,
        "meta_action": "decelerate, keep lane",
    }

    def rows() -> list[dict]:
        return [{**row, "images": [PIL.Image.open(io.BytesIO(view)) for view in views]} for views in encoded]

    normalised = median_ms(lambda: processor.from_rows(rows(), task="planning"), repeats)
    resized = median_ms(lambda: processor.from_rows(rows(), task="planning", normalize_images=False), repeats)
    pixels = processor.from_rows(rows(), task="planning", normalize_images=False)["pixel_values"]
    cached_views = [list(sample.transpose(0, 2, 3, 1)) for sample in pixels.numpy()]  # what `image_cache` serves
    cached_rows = [{**row, "images": views} for views in cached_views]
    cached = median_ms(lambda: processor.from_rows(cached_rows, task="planning", normalize_images=False), repeats)
    normalise = median_ms(lambda: processor.normalize_pixels(pixels), repeats)
    print(f"\n| training batch ({LOADER_BATCH} rows x 6 JPEG views, 400 x 225) | ms / batch |")
    print("|---|---|")
    print(f"| normalised in the loader | {normalised:.0f} |")
    print(f"| resized only, uint8 (normalize_images_on_device) | {resized:.0f} |")
    print(f"| resized once (`image_cache`), uint8 | {cached:.0f} |")
    print(f"| normalize_pixels of that batch, here on the CPU (the trainer runs it on the device) | {normalise:.0f} |")


if __name__ == "__main__":
    main()
