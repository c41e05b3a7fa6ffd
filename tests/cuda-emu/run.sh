#!/usr/bin/env bash
# Runs the CUDA kernels' source on the CPU (one std::thread per CUDA thread, warp shuffles and mma.sync emulated)
# against double-precision references: fp32 attention fwd/bwd/decode, bf16 tensor-core attention fwd/bwd (with the
# emulator's own ldmatrix/cp.async checks),
# layernorm, gated residual + dropout, SUBS cross-entropy, reductions, sampling. Needs g++ (C++20) and python3.
# This checks kernel logic (indexing, tiling, masks, online softmax, fragment layouts) without a GPU; it says
# nothing about speed, memory-model races or shared-memory limits.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
cp "$HERE/emu.h" "$HERE/ref_attention.h" "$HERE"/*_test.cpp "$W/"
python3 "$HERE/prep.py" attention.cu "$W/att.cpp"
python3 "$HERE/prep.py" attention_bf16.cu qkv_bf16.cu "$W/bf.cpp"
for f in elementwise norms loss sampling; do python3 "$HERE/prep.py" $f.cu "$W/$f.cpp"; done
rc=0
for t in ops_test bf_test att_test; do
  g++ -std=c++20 -O1 -w -pthread "$W/$t.cpp" -o "$W/$t"
  echo "== $t"; "$W/$t" || rc=1
done
exit $rc
