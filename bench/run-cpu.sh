#!/usr/bin/env bash
# The CPU half of the benchmark suite, in one command (from anywhere in the checkout):
#   bench/run-cpu.sh            # Release build, then gemm-quick (ours vs OpenBLAS), attention-quick (with the dense
#                               # masked peer), train-quick, sample-quick (KV-cached vs uncached at L=1024), compare
# Raw JSON goes to bench/results/raw/<date>-cpu/, the merged file, table and chart to bench/results/<date>-<device>.*
# Arguments of each step (replacing the defaults below): GEMM_ARGS, ATTN_ARGS, TRAIN_ARGS, SAMPLE_ARGS (environment).
# NICE=1 runs the benchmarks niced (the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build -c Release bench -v q -nologo
BENCH=(dotnet bench/bin/Release/net10.0/FastBlockDiff.Bench.dll)
[[ "${NICE:-0}" == 1 ]] && BENCH=(nice -n 10 "${BENCH[@]}")
DAY=$(date -u +%F)
RAW=bench/results/raw/$DAY-cpu
mkdir -p "$RAW"
echo "== gemm-quick (ours vs OpenBLAS)"
"${BENCH[@]}" gemm-quick ${GEMM_ARGS:---sizes 256,512,1024,2048}
mv "bench/results/$DAY-cpu-gemm.json" "$RAW/gemm.json"
echo "== attention-quick (tile skipping vs dense masked, same backend)"
"${BENCH[@]}" attention-quick --out "$RAW/attention.json" ${ATTN_ARGS:---L 256,1024,2048 --budget 5 --runs 7}
echo "== train-quick"
"${BENCH[@]}" train-quick --out "$RAW/train.json" ${TRAIN_ARGS:---budget 4 --runs 7}
echo "== sample-quick (KV-cached vs uncached)"
"${BENCH[@]}" sample-quick --out "$RAW/sample.json" ${SAMPLE_ARGS:---repeat 5 --repeat-uncached 3}
echo "== compare"
"${BENCH[@]}" compare --title "FastBlockDiff (CPU) vs OpenBLAS, dense masked attention, uncached sampling" "$RAW"
