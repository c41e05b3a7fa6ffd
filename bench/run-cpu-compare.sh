#!/usr/bin/env bash
# The CPU comparison of FastBlockDiff with PyTorch 1.13 (and OpenBLAS), in one command (from anywhere in the checkout):
#   bench/run-cpu-compare.sh            # the whole suite: about 35 min on the quiet 2-core development machine (measured
#                                       # 2026-11-30: peak 13 s, tiny 184, big 403, sample 694, attention ~190, scaling ~430, gemm ~100)
#   QUICK=1 bench/run-cpu-compare.sh    # the same paths at small sizes and fewer pairs, about 3 min (a smoke run)
# Release build; then, alternating process by process (ours, PyTorch, ours, PyTorch, ... PAIRS pairs; BIG_PAIRS,
# SAMPLE_PAIRS and min(PAIRS, 3) for the L sweep):
#   peak       `bench peak`: the FMA peak every figure is also reported against (no peer)
#   tiny       training step and eval forward of `tiny` (4×256, V=260, L=256, L'=4, batch 8)
#   big        the same of 6×512 (8 heads) with V=50,258 (GPT-2 + MASK), L=512, L'=16, batch BIG_BATCH
#   sample     KV-cached block sampling at batch 1 and 8: tiny with V=260, 6×512 with V=50,258 (L'=16, T=16)
#   attention  BD3 attention fwd+bwd at L=256..2048 (2L tokens) vs PyTorch's dense masked softmax(QKᵀ)V with autograd
#   scaling    training step of tiny at L=128, 512, 1024 (batch·L = 2048 tokens; L=256 comes from `tiny`)
#   gemm       the model's GEMM shapes, ours vs OpenBLAS (gemm-quick alternates them call by call), and
#              bench/cpu/torch_gemm.py (PyTorch matmul) where it exists
#   parity     `bench parity-dump` + bench/flex/parity.py on the CPU: our logits and gradients vs the PyTorch peer model
#   report     `bench cpu-compare-report`: ratios of medians, shares of the peak, the load before and after
# PyTorch: /usr/bin/python3 (PYTHON=...), torch.set_num_threads(THREADS=2), fp32, eager. A failing step is reported
# (and listed in the report) and the suite goes on. STEPS picks parts (default all, in the order above).
# Raw JSON: bench/results/raw/<date>-cpu-compare/ (cleared first); merged: bench/results/<date>-<device>-cpu-compare.{json,md}.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
  PAIRS=${PAIRS:-2}; BIG_PAIRS=${BIG_PAIRS:-1}; SAMPLE_PAIRS=${SAMPLE_PAIRS:-2}; BIG_BATCH=${BIG_BATCH:-1}; STEPS_TIMED=${STEPS_TIMED:-1}
  SAMPLE_TOKENS=${SAMPLE_TOKENS:-32}; SAMPLE_BATCH=${SAMPLE_BATCH:-1,8}; BIG_SAMPLE_BATCH=${BIG_SAMPLE_BATCH:-1}
  ATTN_L=${ATTN_L:-256,512}; SCALING_L=${SCALING_L:-128,512}
  GEMM_NT=${GEMM_NT:-4096x768x256}; GEMM_NN=${GEMM_NN:-4096x256x768}; GEMM_TN=${GEMM_TN:-}
else
  # 5 pairs where a pair is short; 3 for the 6×512 model, sampling and the L sweep, to stay near 15 min in all
  PAIRS=${PAIRS:-5}; BIG_PAIRS=${BIG_PAIRS:-3}; SAMPLE_PAIRS=${SAMPLE_PAIRS:-3}; BIG_BATCH=${BIG_BATCH:-2}; STEPS_TIMED=${STEPS_TIMED:-3}
  SAMPLE_TOKENS=${SAMPLE_TOKENS:-64}; SAMPLE_BATCH=${SAMPLE_BATCH:-1,8}; BIG_SAMPLE_BATCH=${BIG_SAMPLE_BATCH:-1,8}
  ATTN_L=${ATTN_L:-256,512,1024,2048}; SCALING_L=${SCALING_L:-128,512,1024}; GEMM_MODELS=${GEMM_MODELS:-tiny,gpt2-6x512}
  # tiny at batch 8 (M = 8·2L = 4096): X·Wᵀ for QKV, MLP up, MLP down; dX = dY·W; dW = dYᵀ·X; the 6×512 model's
  # vocabulary head at batch 2 (M = 2·L = 1024, N = 50,258); 1024³ for the share of the peak
  GEMM_NT=${GEMM_NT:-4096x768x256,4096x1024x256,4096x256x1024,1024x50258x512}
  GEMM_NN=${GEMM_NN:-4096x256x768,1024x1024x1024}; GEMM_TN=${GEMM_TN:-768x256x4096}
fi
STEPS=${STEPS:-peak tiny big sample attention scaling gemm parity report}
want() { [[ " $STEPS " == *" $1 "* ]]; }

DAY=$(date -u +%F)
RAW=bench/results/raw/$DAY-cpu-compare
[[ "${APPEND:-0}" == 1 ]] || rm -rf "$RAW"   # APPEND=1 keeps the files of an earlier run (to rerun a part: STEPS="big report" APPEND=1)
mkdir -p "$RAW"
# PyTorch 1.13 (Debian) multiplies through OpenBLAS, whose 0.3.21 takes this CPU for a Haswell (AVX2) and whose core
# this machine's environment may force: the peers get OpenBLAS's AVX-512 kernels where the CPU has them (the same
# choice gemm-quick makes for its OpenBLAS column), so that PyTorch is measured at its best; PEER_OPENBLAS_CORE overrides
if [[ -z "${PEER_OPENBLAS_CORE:-}" ]]; then
  if grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null; then PEER_OPENBLAS_CORE=Cooperlake
  elif grep -q avx512f /proc/cpuinfo 2>/dev/null; then PEER_OPENBLAS_CORE=SkylakeX; fi
fi
[[ -n "${PEER_OPENBLAS_CORE:-}" ]] && export OPENBLAS_CORETYPE=$PEER_OPENBLAS_CORE
export PYTHONUNBUFFERED=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
export FBD_COMMIT=${FBD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
T0=$(date +%s)
uptime | tee "$RAW/load-before.txt"
[[ "${APPEND:-0}" == 1 ]] || { : > "$RAW/failed.txt"; : > "$RAW/timing.txt"; }
step() { echo "== $*"; "$@" || { echo "!! failed ($?): $*"; echo "$*" >> "$RAW/failed.txt"; }; }
section() {   # section NAME: times what follows until the next section
  local now; now=$(date +%s)
  [[ -n "${SECTION:-}" ]] && echo "$SECTION $((now - SECTION_T0)) s" >> "$RAW/timing.txt"
  SECTION=$1; SECTION_T0=$now
  [[ -n "$1" ]] && echo "#### $1 ($(uptime | sed 's/.*load/load/'))"
}

dotnet build -c Release bench -v q -nologo -clp:ErrorsOnly || { echo "!! build failed"; echo "build" >> "$RAW/failed.txt"; exit 1; }
BENCH=(dotnet bench/bin/Release/net10.0/FastBlockDiff.Bench.dll)
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "!! $PY has no torch: the PyTorch side is skipped (apt-get install python3-torch)"; echo "torch missing for $PY" >> "$RAW/failed.txt"
  PY=""
fi
torch_side() { [[ -n "$PY" ]] && step "$PY" "$@"; }

if want peak; then
  section peak
  step "${BENCH[@]}" peak --runs "$([[ $QUICK == 1 ]] && echo 3 || echo 5)" --out "$RAW/peak.json"
fi

# ours and the torch peer on one training/eval configuration, PAIRS times, alternating
objective_pairs() {   # NAME PAIRS WHAT ENGINE_MODEL_ARGS -- TORCH_MODEL_ARGS -- COMMON_ARGS
  local name=$1 pairs=$2 what=$3; shift 3
  local ours=() torch=() common=()
  while [[ $1 != -- ]]; do ours+=("$1"); shift; done; shift
  while [[ $1 != -- ]]; do torch+=("$1"); shift; done; shift
  common=("$@")
  for ((p = 1; p <= pairs; p++)); do
    step "${BENCH[@]}" step-quick "${ours[@]}" "${common[@]}" --what "$what" --warmup 1 --steps "$STEPS_TIMED" --out "$RAW/$name-$p-ours.json"
    torch_side bench/cpu/torch_objective.py "${torch[@]}" "${common[@]}" --what "$what" --warmup 1 --steps "$STEPS_TIMED" --threads "$THREADS" --out "$RAW/$name-$p-torch.json"
  done
}

if want tiny; then
  section tiny
  objective_pairs tiny "$PAIRS" train,eval --model tiny -- --model tiny -- --vocab 260 --L 256 --Lp 4 --batch 8
fi
if want big; then
  section big
  objective_pairs big "$BIG_PAIRS" train,eval --model custom --width 512 --layers 6 --heads 8 -- --model 6x512 -- \
    --vocab 50258 --L 512 --Lp 16 --batch "$BIG_BATCH"
fi
if want sample; then
  section sample
  for ((p = 1; p <= SAMPLE_PAIRS; p++)); do
    step "${BENCH[@]}" sample-quick --no-uncached --model tiny --vocab 260 --L 256 --Lp 16 --batch "$SAMPLE_BATCH" --tokens "$SAMPLE_TOKENS" \
      --repeat 1 --out "$RAW/sample-tiny-$p-ours.json"
    torch_side bench/flex/sampler.py --device cpu --threads "$THREADS" --model tiny --vocab 260 --L 256 --Lp 16 --batch "$SAMPLE_BATCH" \
      --tokens "$SAMPLE_TOKENS" --repeat 1 --out "$RAW/sample-tiny-$p-torch.json"
    step "${BENCH[@]}" sample-quick --no-uncached --model custom --width 512 --layers 6 --heads 8 --vocab 50258 --L 512 --Lp 16 \
      --batch "$BIG_SAMPLE_BATCH" --tokens "$SAMPLE_TOKENS" --repeat 1 --out "$RAW/sample-big-$p-ours.json"
    torch_side bench/flex/sampler.py --device cpu --threads "$THREADS" --model 6x512 --vocab 50258 --L 512 --Lp 16 --batch "$BIG_SAMPLE_BATCH" \
      --tokens "$SAMPLE_TOKENS" --repeat 1 --out "$RAW/sample-big-$p-torch.json"
  done
fi
if want attention; then
  section attention
  for ((p = 1; p <= PAIRS; p++)); do
    step "${BENCH[@]}" attention-quick --L "$ATTN_L" --Lp 16 --B 1 --H 4 --d 64 --cache "" --no-dense --budget 1 --runs 3 --out "$RAW/attention-$p-ours.json"
    torch_side bench/cpu/torch_attention.py --L "$ATTN_L" --Lp 16 --B 1 --H 4 --d 64 --runs 3 --threads "$THREADS" --out "$RAW/attention-$p-torch.json"
  done
fi
if want scaling; then
  section scaling
  for L in ${SCALING_L//,/ }; do
    objective_pairs "scaling-L$L" "$(( PAIRS < 3 ? PAIRS : 3 ))" train --model tiny -- --model tiny -- --vocab 260 --L "$L" --Lp 4 --batch $(( 2048 / L ))
  done
fi
if want gemm; then
  section gemm
  # gemm-quick writes bench/results/<date>-cpu-gemm.json; each call's file is moved into the raw directory (a file of
  # that name from an earlier run is kept aside and put back)
  kept=""; [[ -f "bench/results/$DAY-cpu-gemm.json" ]] && { kept="$RAW/.kept-cpu-gemm"; cp "bench/results/$DAY-cpu-gemm.json" "$kept"; }
  # every GEMM of the two models (forward X·Wᵀ, dX = dY·W, dW = dYᵀ·X, the vocabulary head), then the transposes below
  [[ -n "${GEMM_MODELS:-}" ]] && step "${BENCH[@]}" gemm-quick --model-shapes "$GEMM_MODELS" && mv "bench/results/$DAY-cpu-gemm.json" "$RAW/gemm-models.json"
  for t in NT NN TN; do
    shapes_var=GEMM_$t; shapes=${!shapes_var}
    [[ -z "$shapes" ]] && continue
    flags=(); [[ $t == T? ]] && flags+=(--transA); [[ $t == ?T ]] && flags+=(--transB)
    step "${BENCH[@]}" gemm-quick --shapes "$shapes" "${flags[@]}" && mv "bench/results/$DAY-cpu-gemm.json" "$RAW/gemm-$t.json"
  done
  [[ -n "$kept" ]] && mv "$kept" "bench/results/$DAY-cpu-gemm.json"
  [[ -f bench/cpu/torch_gemm.py && -n "${GEMM_MODELS:-}" ]] && torch_side bench/cpu/torch_gemm.py --model-shapes "$GEMM_MODELS" --threads "$THREADS" --out "$RAW/gemm-torch.json"
fi
if want parity; then
  section parity
  # a random tiny checkpoint: our CPU engine dumps loss, logits and gradients; the PyTorch peer recomputes them (float64)
  step "${BENCH[@]}" parity-dump --checkpoint "$RAW/parity-ckpt" --init tiny --L 64 --Lp 4 --batch 2 --out "$RAW/parity-dump.safetensors"
  torch_side bench/flex/parity.py --device cpu --checkpoint "$RAW/parity-ckpt" --dump "$RAW/parity-dump.safetensors" --out "$RAW/parity.json"
fi
section ""
uptime | tee "$RAW/load-after.txt"
echo "total $(( $(date +%s) - T0 )) s" >> "$RAW/timing.txt"
sed -i ':a;N;$!ba;s/\n/; /g' "$RAW/timing.txt"; echo >> "$RAW/timing.txt"
if want report; then
  step "${BENCH[@]}" cpu-compare-report "$RAW"
fi
echo "suite: $(cat "$RAW/timing.txt")"
[[ -s "$RAW/failed.txt" ]] && { echo "failed steps:"; cat "$RAW/failed.txt"; exit 1; }
exit 0
