#!/usr/bin/env bash
# The occupancy ablation on a fresh GPU machine (python 3.12, without datasets/nuscenes-devkit): installs the wheels
# carried in .whl/, unpacks the sim dataroots carried in .device_data/sim.tar.gz (train/ and eval/, without lidar
# sweeps and Occ3D label files: the build reads neither), builds their datasets next to the occupancy config of the
# training scenes carried in .device_data/occupancy, trains and evaluates (benchmarks/ablation_occupancy.py), and packs
# the results and the seed-0 checkpoint with occupancy under $OUT.
#   bash benchmarks/ablation_occupancy_device.sh [TIME_LIMIT_S] [PARALLEL_RUNS]
set -u
limit_s=${1:-500}
parallel=${2:-6}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/results /tmp/sim
tar xzf .device_data/sim.tar.gz -C /tmp/sim || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/results/device.txt
python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)" >> /tmp/results/device.txt
timeout "$limit_s" bash -c "
python3 -m benchmarks.ablation_occupancy prepare --sim /tmp/sim --occupancy .device_data/occupancy --out /tmp/data &&
python3 -m benchmarks.ablation_occupancy run --data /tmp/data --seeds 0 1 2 --parallel $parallel --runs /tmp/runs --out /tmp/results
" 2>&1 | grep -v -E "it/s\]|s/it\]|examples/s\]|chunk/s\]|ba/s\]|batch/s\]|s/batch\]" | tee /tmp/results/pipeline.log
cp -r /tmp/runs/vae/reconstruction_metrics.json /tmp/results/ 2>/dev/null
tar czf "$OUT/results.tar.gz" -C /tmp results
if [ -f /tmp/runs/occ_s0/config.json ]; then
  tar cf - --exclude='checkpoint-*' -C /tmp/runs occ_s0 | split -b 15M - "$OUT/occ_s0.tar.part-"
fi
ls -la "$OUT"
