#!/usr/bin/env bash
# The occupancy ablation on a fresh GPU machine (python 3.12, without datasets/nuscenes-devkit): installs the wheels
# carried in .whl/, unpacks the sim dataroots carried in .device_data/sim.tar.gz (train/ and eval/, without lidar
# sweeps and Occ3D label files: the build reads neither), builds their datasets next to the occupancy labels carried in
# .device_data/occupancy (training scenes) and .device_data/occupancy_eval (held-out scenes), trains and evaluates
# (occvla_hf/experiments/occupancy_ablation.py), and packs the results, the stage-1 VAE and the seed-0 checkpoint of the first
# variant under $OUT.
#   [VARIANTS="occ no_occ"] [SEEDS="0 1 2"] [VAE=DIR] bash benchmarks/ablation_occupancy_device.sh [TIME_LIMIT_S] [PARALLEL_RUNS]
# VAE names a trained stage-1 folder (e.g. .device_data/vae, from an earlier call's vae.tar.gz) to skip stage 1.
set -u
limit_s=${1:-540}
parallel=${2:-6}
variants=${VARIANTS:-occ no_occ}
seeds=${SEEDS:-0 1 2}
vae_args=${VAE:+--vae $VAE}
first=${variants%% *}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/results /tmp/sim
tar xzf .device_data/sim.tar.gz -C /tmp/sim || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/results/device.txt
python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)" >> /tmp/results/device.txt
timeout "$limit_s" bash -c "
python3 -m occvla_hf.experiments.occupancy_ablation prepare --sim /tmp/sim --occupancy .device_data/occupancy \
  --occupancy-eval .device_data/occupancy_eval --out /tmp/data &&
python3 -m occvla_hf.experiments.occupancy_ablation run --data /tmp/data --variants $variants --seeds $seeds \
  --parallel $parallel --runs /tmp/runs --out /tmp/results $vae_args
" 2>&1 | grep -v -E "it/s\]|s/it\]|examples/s\]|chunk/s\]|ba/s\]|batch/s\]|s/batch\]" | tee /tmp/results/pipeline.log
cp /tmp/runs/vae/reconstruction_metrics.json /tmp/results/ 2>/dev/null
tar czf "$OUT/results.tar.gz" -C /tmp results
if [ -f /tmp/runs/vae/config.json ]; then
  tar czf "$OUT/vae.tar.gz" --exclude='checkpoint-*' -C /tmp/runs vae
fi
if [ -f "/tmp/runs/${first}_s0/config.json" ]; then
  tar cf - --exclude='checkpoint-*' -C /tmp/runs "${first}_s0" | split -b 15M - "$OUT/${first}_s0.tar.part-"
fi
ls -la "$OUT"
