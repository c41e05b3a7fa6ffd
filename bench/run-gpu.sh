#!/usr/bin/env bash
# The GPU half of the benchmark suite, in one command, on a machine with an NVIDIA GPU and PyTorch >= 2.5:
#   bench/publish.sh          # here, where .NET is: bench/publish/FastBlockDiff.Bench (self-contained single file)
#   bench/run-gpu.sh          # there: ours (the published bench, --backend cuda, bf16) and the PyTorch peers on the same
#                             # GPU in the same run, the parity check, then compare
# Shapes (issue 5): attention L in {1024,4096,8192}, L' in {4,16}, B*H = 96 (B=8, H=12), d=64, bf16; training step of
# `small` at L=1024, batch 8; sampling of `small` at batch 1 and 32. Override with the variables below.
# Raw JSON: bench/results/raw/<date>-gpu/; merged JSON, table (.md) and chart (.png): bench/results/<date>-<gpu>.*
# When $OUT is set (the device tool), those files are also copied there.
# STEPS picks parts (default all): "ours parity flex train sample compare". The device tool stops a command after
# 10 minutes and torch.compile of six flex shapes takes minutes: there, run the parts in separate calls, fetch the
# raw JSON each call leaves in $OUT/raw-gpu.tar.gz, and run `bench compare DIR` here on the unpacked files.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BENCH=${FBD_BENCH:-bench/publish/FastBlockDiff.Bench}
L=${L:-1024,4096,8192}; LP=${LP:-4,16}; B=${B:-8}; H=${H:-12}; D=${D:-64}
TRAIN_BATCH=${TRAIN_BATCH:-8}; SAMPLE_BATCH=${SAMPLE_BATCH:-1,32}; SAMPLE_TOKENS=${SAMPLE_TOKENS:-1024}
DAY=$(date -u +%F)
RAW=bench/results/raw/$DAY-gpu
mkdir -p "$RAW"
export PYTHONUNBUFFERED=1
export FBD_COMMIT=${FBD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
GPU=$($PY -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null || nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "GPU: $GPU; torch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv || true
status=0
step() { echo "== $*"; "$@" || { echo "!! failed ($?): $*"; status=1; }; }
STEPS=${STEPS:-ours parity flex train sample compare}
want() { [[ " $STEPS " == *" $1 "* ]]; }

if [[ -x "$BENCH" ]] && want ours; then
  # ours: the attention kernels, a training step and the sampler on the CUDA backend (skipped with a message if the
  # build has no CUDA backend)
  step "$BENCH" attention-quick --backend cuda --dtype bf16 --L "$L" --Lp "$LP" --B "$B" --H "$H" --d "$D" --no-dense \
       --cache 1024,4096,8192 --out "$RAW/ours-attention.json"
  step "$BENCH" train-quick --backend cuda --dtype bf16 --model small --L 1024 --Lp "$LP" --batch "$TRAIN_BATCH" --out "$RAW/ours-train.json"
  step "$BENCH" sample-quick --backend cuda --dtype bf16 --model small --L 1024 --Lp 16 --batch "$SAMPLE_BATCH" \
       --tokens "$SAMPLE_TOKENS" --no-uncached --out "$RAW/ours-sample.json"
fi
if [[ -x "$BENCH" ]] && want parity; then
  # parity: our CPU engine (fp32) dumps loss, logits and gradients; PyTorch recomputes them in float64
  step "$BENCH" parity-dump --checkpoint "$RAW/parity-ckpt" --init "${PARITY_MODEL:-tiny}" --L "${PARITY_L:-256}" --Lp "${PARITY_LP:-4}" \
       --batch 2 --out "$RAW/parity-dump.safetensors"
  step $PY bench/flex/parity.py --checkpoint "$RAW/parity-ckpt" --dump "$RAW/parity-dump.safetensors" --out "$RAW/parity.json"
fi
if [[ ! -x "$BENCH" ]]; then
  echo "!! $BENCH not found: run bench/publish.sh where .NET is and carry bench/publish; our side is skipped"
  status=1
fi

# the PyTorch peers
want flex && step $PY bench/flex/flex_bench.py --L "$L" --Lp "$LP" --B "$B" --H "$H" --d "$D" --out "$RAW/flex.json"
want train && step $PY bench/flex/train_step.py --model small --L 1024 --Lp "$LP" --batch "$TRAIN_BATCH" --out "$RAW/torch-train.json"
want sample && step $PY bench/flex/sampler.py --model small --L 1024 --Lp 16 --batch "$SAMPLE_BATCH" --tokens "$SAMPLE_TOKENS" --out "$RAW/torch-sample.json"

if [[ -x "$BENCH" ]] && want compare; then
  step "$BENCH" compare --device "$GPU" --title "FastBlockDiff vs FlexAttention / PyTorch on $GPU" "$RAW"
fi
if [[ -n "${OUT:-}" ]]; then
  cp bench/results/"$DAY"-*.json bench/results/"$DAY"-*.md bench/results/"$DAY"-*.png "$OUT"/ 2>/dev/null
  tar czf "$OUT/raw-gpu.tar.gz" --exclude='*.safetensors' --exclude='parity-ckpt' "$RAW"
fi
exit $status
