#!/usr/bin/env bash
# The one GPU check (issue 9). Two halves:
#   tests/gpu/check.sh publish   here, where .NET is: tests, the `fastblockdiff` CLI and the bench, self-contained for
#                                linux-x64 into ONE folder out/gpu-check/ (one shared runtime, InvariantGlobalization: no
#                                libicu needed), packed as out/gpu-check.tar.xz for the device tool's carry (64 MiB).
#   tests/gpu/check.sh run [DIR] on the GPU machine, from the repository root (no .NET SDK, no libicu, no `dotnet` is
#                                started): unpacks the carry if needed, then in one command
#                                  1. the CUDA tests (FASTBLOCKDIFF_REQUIRE_CUDA=1: a missing device fails, never skips),
#                                  2. our attention / training-step / sampling benchmarks (bench --backend cuda, bf16),
#                                  3. the PyTorch peers from bench/flex (FlexAttention, torch.compile), if torch is there,
#                                  4. the parity check (our fp32 engine vs PyTorch in float64),
#                                  5. bench compare: bench/results/<date>-<gpu>.json naming device, commit and command,
#                                and prints the time of each phase and the total. Results also go to $OUT when set.
#   tests/gpu/check.sh dry       here: runs the published folder in `env -i` with an empty PATH (no dotnet); the CUDA tests
#                                must skip with their reason, the CLI must start, nothing may need dotnet.
# Budget knobs (the run must fit 10 minutes on an H200): CHECK_L (default 1024,4096), CHECK_LP (16), CHECK_STEPS
# ("tests ours flex train sample parity compare"; "attn compare" runs the attention sweep of issue 10 alone),
# CHECK_TEST_FILTER (xunit -class filters).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PUB="$ROOT/out/gpu-check"
mode="${1:-run}"; [ $# -gt 0 ] && shift
T0=$(date +%s)
phase_start=$T0
phase() {   # phase NAME: prints the time the previous phase took
  local now; now=$(date +%s)
  if [ -n "${CURRENT:-}" ]; then echo "-- $CURRENT took $((now - phase_start)) s"; fi
  CURRENT="$1"; phase_start=$now
  if [ -n "$1" ]; then echo "== $1"; fi
}

publish() {
  set -e
  rm -rf "$PUB"; mkdir -p "$PUB"
  local common=(-c Release -r linux-x64 --self-contained true -p:InvariantGlobalization=true -p:PublishSingleFile=false
                -p:DebugType=none -p:GenerateDocumentationFile=false -nologo -v q)
  phase "publish tests";  dotnet publish "$ROOT/tests/FastBlockDiff.Tests.csproj" "${common[@]}" -o "$PUB"
  phase "publish cli";    dotnet publish "$ROOT/engine/cli/FastBlockDiff.Cli.csproj" "${common[@]}" -o "$PUB"
  phase "publish bench";  dotnet publish "$ROOT/bench/FastBlockDiff.Bench.csproj" "${common[@]}" -o "$PUB"
  grep -q includedFrameworks "$PUB/fastblockdiff.runtimeconfig.json"   # the CLI runs without an installed runtime
  phase "pack"
  tar -C "$ROOT/out" -cJf "$ROOT/out/gpu-check.tar.xz" gpu-check
  phase ""
  echo "published $PUB ($(du -sh "$PUB" | cut -f1)); carry out/gpu-check.tar.xz ($(du -h "$ROOT/out/gpu-check.tar.xz" | cut -f1))"
  echo "device: run carry=[\"out/gpu-check.tar.xz\"] command='bash tests/gpu/check.sh run'"
}

unpack() {
  if [ ! -x "$PUB/FastBlockDiff.Tests" ] && [ -f "$ROOT/out/gpu-check.tar.xz" ]; then
    tar -C "$ROOT/out" -xJf "$ROOT/out/gpu-check.tar.xz"
  fi
  [ -x "$PUB/FastBlockDiff.Tests" ] || { echo "no published check in $PUB: run tests/gpu/check.sh publish where .NET is"; exit 2; }
}

dry() {
  unpack
  local log bare; log=$(mktemp); bare=$(mktemp -d)   # bare: an empty folder as the whole PATH (dotnet may sit in /usr/bin)
  # a clean environment: nothing on the PATH (so no dotnet), no DOTNET_ROOT, no libicu needed (InvariantGlobalization)
  env -i HOME="${HOME:-/tmp}" PATH="$bare" FASTBLOCKDIFF_REQUIRE_CUDA=0 FASTBLOCKDIFF_CUDA_LIB_DIRS=/nonexistent \
    "$PUB/FastBlockDiff.Tests" -noColor -class 'FastBlockDiff.Tests.CudaBackendTests' -class 'FastBlockDiff.Tests.CudaThreadTests' \
      -class 'FastBlockDiff.Tests.CudaPrecisionTests' -class 'FastBlockDiff.Tests.CudaGraphTests' -class 'FastBlockDiff.Tests.CudaGemmEpilogueTests' \
      -class 'FastBlockDiff.Tests.DeviceResidentStepTests' -class 'FastBlockDiff.Tests.CliTests' 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  env -i PATH="$bare" "$PUB/fastblockdiff" info > "$log.info" 2>&1; local rcInfo=$?
  local fail=0
  [ "$rc" -eq 0 ] || { echo "dry: the published tests failed (rc $rc)"; fail=1; }
  grep -q "\[SKIP\]" "$log" && grep -q "no CUDA device" "$log" || { echo "dry: the CUDA tests did not skip with their reason"; fail=1; }
  [ "$rcInfo" -eq 0 ] && grep -q "cpu" "$log.info" || { echo "dry: the published CLI did not run: $(cat "$log.info")"; fail=1; }
  rm -rf "$log" "$log.info" "$bare"
  [ "$fail" -eq 0 ] && echo "dry: OK (published tests ran in env -i with an empty PATH, so no dotnet; CUDA tests skipped with their reason; CLI started)"
  return $fail
}

run() {
  unpack
  local day gpu commit dir status=0
  day=$(date -u +%F)
  commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); gpu=${gpu:-unknown GPU}
  dir="${1:-$ROOT/bench/results/raw/$day-gpu-check}"; mkdir -p "$dir"
  echo "GPU: $gpu; commit $commit; command: tests/gpu/check.sh run $*"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.sm --format=csv > "$dir/device.txt" 2>&1 || echo "nvidia-smi: not found" > "$dir/device.txt"
  export FASTBLOCKDIFF_PTX_CACHE="$dir/ptx-cache" FASTBLOCKDIFF_BENCH_OUT="$dir" FBD_COMMIT="$commit" PYTHONUNBUFFERED=1
  local steps=" ${CHECK_STEPS:-tests ours flex train sample parity compare} "
  local L=${CHECK_L:-1024,4096} LP=${CHECK_LP:-16} BENCH="$PUB/FastBlockDiff.Bench" PY=${PYTHON:-python3}
  step() { "$@" || { echo "!! failed ($?): $*"; status=1; }; }
  if [[ $steps == *" tests "* ]]; then
    phase "CUDA tests"
    # shellcheck disable=SC2086
    FASTBLOCKDIFF_REQUIRE_CUDA=1 FASTBLOCKDIFF_REQUIRE_NVRTC=1 step "$PUB/FastBlockDiff.Tests" -noColor -result-ctrf "$dir/tests.json" \
      ${CHECK_TEST_FILTER:--class 'FastBlockDiff.Tests.Cuda*' -class 'FastBlockDiff.Tests.NvrtcCompileTests' -class 'FastBlockDiff.Tests.DeviceResidentStepTests'}
  fi
  if [[ $steps == *" ours "* ]]; then
    phase "ours: attention, training step, sampling (cuda, bf16)"
    step "$BENCH" attention-quick --backend cuda --dtype bf16 --L "$L" --Lp "$LP" --B 8 --H 12 --d 64 --no-dense --cache 1024,4096 --out "$dir/ours-attention.json"
    step "$BENCH" train-quick --backend cuda --dtype bf16 --model small --L 1024 --Lp "$LP" --batch 8 --out "$dir/ours-train.json"
    step "$BENCH" sample-quick --backend cuda --dtype bf16 --model small --L 1024 --Lp 16 --batch 1,32 --tokens 1024 --no-uncached --out "$dir/ours-sample.json"
  fi
  if [[ $steps == *" attn "* ]]; then   # issue 10 (opt-in: CHECK_STEPS="attn compare"): bf16 BD3 attention vs FlexAttention
    phase "attention side by side: L 1024-8192, L' 4 and 16, d 64, bf16, fwd and fwd+bwd"
    step "$BENCH" attention-quick --backend cuda --dtype bf16 --L 1024,2048,4096,8192 --Lp 4,16 --B 8 --H 12 --d 64 --no-dense --cache 1024 --out "$dir/ours-attention-sweep.json"
    if $PY -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
      step $PY "$ROOT/bench/flex/flex_bench.py" --L 1024,2048,4096,8192 --Lp 4,16 --B 8 --H 12 --d 64 --no-sdpa-dense --out "$dir/flex-attention-sweep.json"
    else echo "!! PyTorch with CUDA not found ($PY): FlexAttention side skipped"; status=1; fi
  fi
  if $PY -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    [[ $steps == *" flex "* ]] && { phase "PyTorch FlexAttention"; step $PY "$ROOT/bench/flex/flex_bench.py" --L "$L" --Lp "$LP" --B 8 --H 12 --d 64 --out "$dir/flex.json"; }
    [[ $steps == *" train "* ]] && { phase "PyTorch training step (torch.compile)"; step $PY "$ROOT/bench/flex/train_step.py" --model small --L 1024 --Lp "$LP" --batch 8 --out "$dir/torch-train.json"; }
    [[ $steps == *" sample "* ]] && { phase "PyTorch reference sampler"; step $PY "$ROOT/bench/flex/sampler.py" --model small --L 1024 --Lp 16 --batch 1,32 --tokens 1024 --out "$dir/torch-sample.json"; }
    if [[ $steps == *" parity "* ]]; then
      phase "parity (our fp32 engine vs PyTorch float64)"
      step "$BENCH" parity-dump --checkpoint "$dir/parity-ckpt" --init tiny --L 256 --Lp 4 --batch 2 --out "$dir/parity-dump.safetensors"
      step $PY "$ROOT/bench/flex/parity.py" --checkpoint "$dir/parity-ckpt" --dump "$dir/parity-dump.safetensors" --out "$dir/parity.json"
    fi
  else
    echo "!! PyTorch with CUDA not found ($PY): the PyTorch peers and the parity check are skipped"; status=1
  fi
  if [[ $steps == *" compare "* ]]; then
    phase "compare"
    step "$BENCH" compare --device "$gpu" --title "FastBlockDiff vs FlexAttention / PyTorch on $gpu (tests/gpu/check.sh run, $commit)" "$dir"
  fi
  phase ""
  echo "total $(( $(date +%s) - T0 )) s; raw results in $dir; exit $status"
  if [ -n "${OUT:-}" ]; then
    cp "$ROOT"/bench/results/"$day"-*.json "$ROOT"/bench/results/"$day"-*.md "$OUT"/ 2>/dev/null
    tar czf "$OUT/gpu-check-raw.tar.gz" --exclude='*.safetensors' --exclude='parity-ckpt' --exclude='ptx-cache' -C "$(dirname "$dir")" "$(basename "$dir")"
  fi
  return $status
}

case "$mode" in
  publish) publish ;;
  dry) dry ;;
  run) run "$@" ;;
  *) echo "usage: $0 publish | dry | run [DIR]" >&2; exit 2 ;;
esac
