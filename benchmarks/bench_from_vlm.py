"""`OccVLAForPlanning.from_vlm` start-up: wall time and peak host memory of building OccVLA from a PaliGemma checkpoint.

A random bf16 PaliGemma-2 checkpoint is saved once under `--work` (`bench_recipe.save_random_paligemma`): `mid` is
Gemma-2 layers at hidden 1024 x 8 layers with the full 257216-token embedding and SigLIP-So400m/14 at 224 px; `tiny`
the tiny shapes of `bench_inference`. Each package folder of `--packages` (a checkout of this repository: the code
under test, so that two versions compare side by side) runs `from_vlm` in a fresh subprocess, `--repeats` times;
printed per folder: the median seconds of `from_vlm`, the subprocess's peak RSS (`ru_maxrss`) and its RSS before
the call (imports only).

    python benchmarks/bench_from_vlm.py --work /tmp/from_vlm --packages /path/to/old/checkout .
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import transformers

if __package__ in (None, ""):  # run as a script: the repository root goes on the path, for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_inference import GEMMA2_2B, GEMMA2_LAYERS, SIGLIP_SO400M, TINY_TEXT, TINY_VISION
from benchmarks.bench_recipe import save_random_paligemma

MID_TEXT = dict(GEMMA2_2B, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8)
SHAPES = {"mid": (MID_TEXT, SIGLIP_SO400M), "tiny": (TINY_TEXT, TINY_VISION)}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}

# Runs in the subprocess, with the package folder first on the path: prints one JSON line.
CHILD = """
import json, resource, sys, time
import torch
import occvla_hf
from occvla_hf.modeling import OccVLAForPlanning

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
model = OccVLAForPlanning.from_vlm(sys.argv[1], num_views=6, dtype=getattr(torch, sys.argv[2]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"s": seconds, "peak_kib": peak, "before_kib": rss_before, "params": params,
                  "package": occvla_hf.__file__}))
"""


def build(shape: str, path: Path) -> None:
    """The random checkpoint of `shape`, saved unless `path` holds it already."""
    if (path / "config.json").is_file():
        return
    from occvla_hf.processing import build_tokenizer

    tokenizer = build_tokenizer()
    text, vision = SHAPES[shape]
    text = {**text, **GEMMA2_LAYERS}
    config = transformers.PaliGemmaConfig(
        vision_config={**vision, "projection_dim": text["hidden_size"]},
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        projection_dim=text["hidden_size"],
    )
    print(f"checkpoint {path}: {json.dumps(save_random_paligemma(config, tokenizer, path))}")


def measure(package: Path, checkpoint: Path, dtype: str) -> dict:
    """`from_vlm` in a fresh interpreter that imports `occvla_hf` from `package`."""
    env = {**os.environ, "PYTHONPATH": str(package)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkpoint), DTYPES[dtype]],
        cwd=package, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of the checkpoint (built once)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="from_vlm's dtype (fp32: training)")
    parser.add_argument("--packages", type=Path, nargs="+", default=[Path(__file__).resolve().parents[1]],
                        help="checkouts whose occvla_hf to measure (default: this one)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    checkpoint = args.work / args.shape
    build(args.shape, checkpoint)
    cpu = platform.processor() or platform.machine()
    print(f"\n# {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.shape} checkpoint, from_vlm dtype {args.dtype}, {args.repeats} run(s) each")  # fmt: skip
    header = ("package", "params", "from_vlm s", "peak RSS GiB", "RSS before GiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for package in args.packages:
        runs = [measure(package.resolve(), checkpoint, args.dtype) for _ in range(args.repeats)]
        gib = 1024**2
        print(
            f"| {Path(runs[0]['package']).parents[1]} | {runs[0]['params'] / 1e6:.0f} M | "
            f"{statistics.median(run['s'] for run in runs):.2f} | "
            f"{max(run['peak_kib'] for run in runs) / gib:.2f} | {runs[0]['before_kib'] / gib:.2f} |"
        )


if __name__ == "__main__":
    main()
