#!/usr/bin/env bash
# The at-scale occupancy ablation (occvla_hf/experiments/ablation_scale.py) on the GPU machine (python 3.12, without
# datasets/nuscenes-devkit: their wheels travel in .whl/), in phases that fit one call each and keep their outputs in
# ignored folders of the checkout (.scale_sim, .scale_data, .scale_runs), which a warm machine keeps between calls:
#   bash benchmarks/ablation_scale_device.sh prepare [TIME_LIMIT_S]   # generate the scale presets on every core, build
#   bash benchmarks/ablation_scale_device.sh vae [TIME_LIMIT_S]       # stage 1, the latent cache, the step benchmark
#   [VARIANTS="occ no_occ"] [SEEDS="0"] [STEPS=N] [JOINT_OVERRIDES="--a.b v"] bash benchmarks/ablation_scale_device.sh train [TIME_LIMIT_S]
# Each phase writes its log and results under $OUT (results.tar.gz for the per-run JSON reports).
set -u
phase=${1:?phase: prepare | vae | train}
limit_s=${2:-560}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
quiet='it/s\]|s/it\]|examples/s\]|chunk/s\]|ba/s\]|batch/s\]|s/batch\]|scene/s\]'
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)"
  nproc
} > "$OUT/device.txt" 2>&1
case "$phase" in
  prepare)
    # Generation first (skipped once complete), then the build, which resumes from its chunk cache when called again.
    timeout "$limit_s" bash -c "
      if [ ! -f .scale_sim/eval/v1.0-trainval/sample.json ]; then
        rm -rf .scale_sim &&
        python3 -m occvla_hf.cli sim --preset scale --out .scale_sim/train --workers $(nproc) &&
        python3 -m occvla_hf.cli sim --preset scale_heldout --out .scale_sim/eval --workers $(nproc)
      fi &&
      python3 -m occvla_hf.experiments.ablation_scale prepare --sim .scale_sim --out .scale_data
    " 2>&1 | grep -v -E "$quiet" | tee "$OUT/prepare.log"
    du -sh .scale_sim .scale_data >> "$OUT/prepare.log"
    ;;
  vae)
    timeout "$limit_s" bash -c "
      python3 -m occvla_hf.cli train vae --config configs/scale_vae.yaml --training.output_dir .scale_runs/vae \
        --dataset .scale_data/train/arrow/occupancy &&
      python3 -m occvla_hf.training.latent_cache .scale_data/train .scale_runs/vae .scale_runs/latents \
        --split train val --device cuda &&
      python3 -m benchmarks.bench_training --shape scale --device cuda --dtype bf16-autocast --batch 64 \
        --no-checkpointing-rows --warmup 2 --repeats 5
    " 2>&1 | grep -v -E "$quiet" | tee "$OUT/vae.log"
    cp .scale_runs/vae/reconstruction_metrics.json "$OUT/" 2>/dev/null
    tar czf "$OUT/vae.tar.gz" --exclude='checkpoint-*' -C .scale_runs vae 2>/dev/null
    ;;
  train)
    steps=${STEPS:-1500}
    extra=${JOINT_OVERRIDES:-}
    timeout "$limit_s" python3 -m occvla_hf.experiments.ablation_scale run --data .scale_data --vae .scale_runs/vae \
      --variants ${VARIANTS:-occ no_occ} --seeds ${SEEDS:-0} --parallel 2 --runs .scale_runs --out .scale_runs/results \
      --latency-repeats 20 \
      --joint-overrides "--occupancy_latent_cache .scale_runs/latents --training.max_steps $steps $extra" \
      2>&1 | grep -v -E "$quiet" | tee "$OUT/train.log"
    tar czf "$OUT/results.tar.gz" -C .scale_runs results
    ;;
  *)
    echo "phase: expected prepare | vae | train, got $phase" >&2
    exit 2
    ;;
esac
ls -la "$OUT"
