#!/usr/bin/env bash
# The at-scale occupancy ablation (occvla_hf/experiments/ablation_scale.py) on a lent GPU machine (python 3.12,
# without datasets/nuscenes-devkit: their wheels travel in .whl/, filled once with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0 datasets==4.8.5 \
#     dill==0.4.1 multiprocess==0.70.19 nuscenes-devkit==1.2.0 pyquaternion==0.9.9 shapely==2.0.7 descartes==1.1.0 \
#     fire==0.7.1 termcolor==3.3.0 cachetools==8.0.2 trl==1.16.0 peft==0.21.2
# ). A lent machine keeps nothing once it is handed back
# and one command runs at most 10 minutes, so the whole experiment runs as one detached pipeline, and calls wait on it:
#   bash benchmarks/ablation_scale_device.sh start [WAIT_S]   # install, launch the pipeline (setsid), wait WAIT_S
#   bash benchmarks/ablation_scale_device.sh wait [WAIT_S]    # wait until it ends or WAIT_S pass
# Each call copies the pipeline's log and every result so far to $OUT (results.tar.gz: per-run JSON reports, training
# logs, the VAE's reconstruction metrics) every 30 s and at its end, so a run's report comes back with the first call
# after it is made, even with a call that the device's time limit cuts off.
# The pipeline: sim data (the `scale` preset's first TRAIN_SCENES scenes and the `scale_heldout` scenes), the build,
# stage 1 (configs/scale_vae.yaml, VAE_STEPS steps), the latent cache, then `ablation_scale run` of VARIANTS x SEEDS
# (the first run also caches the resized training views for all, the first evaluation the held-out views),
# one at a time (each evaluated while the next one trains), STEPS steps each, with JOINT_OVERRIDES. The trained VAE
# comes back in results/vae/ (about 7 MB); VAE=<its folder in the checkout> skips stage 1 and uses it, so that blocks
# share one frozen VAE (and save its training time). HELDOUT_SCENES,
# VAE_OVERRIDES and LATENT_DEVICE (cuda) make it small enough for a CPU check. SIDE_COMMAND (optional) is a GPU
# measurement that runs while the GPU would idle: during the sim and the build, on the last SIDE_CPUS cores (the data
# stages get the others), output in results/side.log; stage 1 waits for it. nvidia-smi samples the GPU's use every
# 5 s into results/gpu_use.csv.
set -u
phase=${1:?phase: start | wait}
wait_s=${2:-560}
: "${TRAIN_SCENES:=190}" "${VAE_STEPS:=2000}" "${STEPS:=1000}" "${VARIANTS:=no_occ occ_xattn occ}" "${SEEDS:=0 1}"
: "${JOINT_OVERRIDES:=}" "${VAE_OVERRIDES:=}" "${HELDOUT_SCENES:=40}" "${LATENT_DEVICE:=cuda}"
: "${SIDE_COMMAND:=}" "${SIDE_CPUS:=4}" "${VAE:=}"
: "${WORK:=/tmp/occvla_scale}"  # outside the checkout: a call re-syncs the checkout and deletes what git would not keep
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
quiet='it/s\]|s/it\]|examples/s\]|chunk/s\]|ba/s\]|batch/s\]|s/batch\]|scene/s\]'
log=$WORK/runs/pipeline.log

pipeline() {
  local workers side_pid="" sampler_pid=""
  workers=$(nproc)
  mkdir -p $WORK/runs/results
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > $WORK/runs/results/gpu_use.csv &
    sampler_pid=$!
  fi
  if [ -n "$SIDE_COMMAND" ]; then
    workers=$((workers - SIDE_CPUS))
    taskset -c "$workers-$((workers + SIDE_CPUS - 1))" bash -c "$SIDE_COMMAND" > $WORK/runs/results/side.log 2>&1 &
    side_pid=$!
    taskset -p -c "0-$((workers - 1))" $$ > /dev/null  # the data stages keep off the side command's cores
  fi
  {
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)"
    echo "cpus $workers; TRAIN_SCENES=$TRAIN_SCENES VAE_STEPS=$VAE_STEPS STEPS=$STEPS VARIANTS=$VARIANTS SEEDS=$SEEDS VAE=$VAE"
  } > $WORK/runs/results/device.txt 2>&1
  stage() { echo "[$(date +%T)] $*"; }
  vae_dir=$WORK/runs/vae
  [ -z "$VAE" ] || vae_dir=$(realpath "$VAE")
  train_vae() {  # stage 1, unless VAE names a trained one; the model files come back in results/vae/
    if [ -n "$VAE" ]; then
      stage "vae: $VAE"
      return 0
    fi
    stage vae
    python3 -m occvla_hf.cli train vae --config configs/scale_vae.yaml --training.output_dir "$vae_dir" \
      --dataset $WORK/data/train --training.max_steps "$VAE_STEPS" $VAE_OVERRIDES &&
      cp "$vae_dir/reconstruction_metrics.json" $WORK/runs/results/vae_reconstruction_metrics.json &&
      mkdir -p $WORK/runs/results/vae && cp "$vae_dir"/*.json "$vae_dir"/*.safetensors $WORK/runs/results/vae/
  }
  side_done() {  # stage 1 has the GPU to itself: wait for the side command, then give its cores back
    [ -n "$side_pid" ] || return 0
    stage wait for the side command
    wait "$side_pid"
    stage "side command exit $?"
    taskset -p -c "0-$(($(nproc --all) - 1))" $$ > /dev/null
  }
  stage sim train &&
    python3 -m occvla_hf.cli sim --preset scale --scenes "$TRAIN_SCENES" --out $WORK/sim/train --workers "$workers" &&
    stage sim eval &&
    python3 -m occvla_hf.cli sim --preset scale_heldout --scenes "$HELDOUT_SCENES" --out $WORK/sim/eval \
      --workers "$workers" &&
    stage build &&
    python3 -m occvla_hf.experiments.ablation_scale prepare --sim $WORK/sim --out $WORK/data --workers "$workers" &&
    side_done &&
    train_vae &&
    stage latent cache &&
    python3 -m occvla_hf.training.latent_cache $WORK/data/train "$vae_dir" $WORK/runs/latents \
      --split train val --device "$LATENT_DEVICE" &&
    stage ablation &&
    python3 -m occvla_hf.experiments.ablation_scale run --data $WORK/data --vae "$vae_dir" \
      --variants $VARIANTS --seeds $SEEDS --parallel 1 --runs $WORK/runs --out $WORK/runs/results \
      --latency-repeats 20 --probes --eval-workers 4 --eval-image-cache $WORK/runs/eval_images \
      --joint-overrides "--occupancy_latent_cache $WORK/runs/latents --image_cache $WORK/runs/images \
        --training.max_steps $STEPS $JOINT_OVERRIDES"
  stage "pipeline exit $?"
  [ -z "$sampler_pid" ] || kill "$sampler_pid"
  touch $WORK/runs/done
}

collect() {  # to $OUT: the pipeline's log and every result so far (results.tar.gz written whole, then renamed)
  grep -v -E "$quiet" "$log" > "$OUT/pipeline.log" 2>/dev/null
  tar czf "$OUT/results.part" -C $WORK/runs results 2>/dev/null && mv "$OUT/results.part" "$OUT/results.tar.gz"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader > "$OUT/gpu.txt" 2>&1
}

case "$phase" in
  start)
    if [ "${INSTALL:-1}" = 1 ]; then  # INSTALL=0: the packages are installed already (a CPU check)
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    fi
    rm -rf $WORK/sim $WORK/data $WORK/runs && mkdir -p $WORK/runs
    export WORK TRAIN_SCENES VAE_STEPS STEPS VARIANTS SEEDS JOINT_OVERRIDES VAE_OVERRIDES HELDOUT_SCENES LATENT_DEVICE \
      SIDE_COMMAND SIDE_CPUS VAE
    setsid bash "$0" pipeline > "$log" 2>&1 < /dev/null &
    ;;
  wait) ;;
  pipeline) pipeline; exit ;;
  *)
    echo "phase: expected start | wait, got $phase" >&2
    exit 2
    ;;
esac
deadline=$((SECONDS + wait_s)) next_collect=$((SECONDS + 30))
while [ ! -f $WORK/runs/done ] && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 5
  if [ "$SECONDS" -ge "$next_collect" ]; then  # a call cut off by the device's time limit still brings the results
    collect
    next_collect=$((SECONDS + 30))
  fi
done
collect
ls -la "$OUT"
tail -n 25 "$OUT/pipeline.log"
