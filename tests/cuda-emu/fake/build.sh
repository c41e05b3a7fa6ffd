#!/usr/bin/env bash
# Builds fake libcuda.so.1 and libcublasLt.so.12 (CPU emulation) into DIR (default: a temp folder) and prints DIR.
# Use: FASTBLOCKDIFF_CUDA_LIB_DIRS=$(tests/cuda-emu/fake/build.sh) dotnet test ... -- --filter-class FastBlockDiff.Tests.CudaBackendTests
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${1:-$(mktemp -d)}"; mkdir -p "$DIR"
cp "$HERE/../emu.h" "$DIR/"
python3 "$HERE/gen.py" "$DIR/kernels_all.cpp"
g++ -std=c++20 -O1 -w -pthread -shared -fPIC -I"$DIR" -I"$HERE" -Wl,-soname,libcuda.so.1 -o "$DIR/libcuda.so.1" "$HERE/fakecuda.cpp" "$DIR/kernels_all.cpp" >&2
g++ -std=c++20 -O1 -w -shared -fPIC -o "$DIR/libcublasLt.so.12" "$HERE/fakecublaslt.cpp" >&2
echo "$DIR"
