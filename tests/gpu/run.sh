#!/usr/bin/env bash
# GPU test runner.
#   tests/gpu/run.sh build            self-contained single-file publish of the tests for linux-x64 into out/gpu-tests
#                                     (with this script beside it), plus out/gpu-tests.tar.gz to carry to a GPU machine
#                                     that has no dotnet
#   tests/gpu/run.sh run [DIR] [ARGS] run the published tests (on the GPU machine: ./run.sh run inside the unpacked
#                                     folder) writing DIR/summary.json (CTRF JSON), DIR/results.trx, DIR/console.log and
#                                     DIR/device.txt; DIR defaults to ./gpu-results/<UTC time>. Extra ARGS go to the
#                                     xunit runner (e.g. -class FastBlockDiff.Tests.CudaBackendTests).
#   tests/gpu/run.sh all [DIR]        build, then run here
# In run mode the CUDA tests must not skip: FASTBLOCKDIFF_REQUIRE_CUDA=1 and FASTBLOCKDIFF_REQUIRE_NVRTC=1 turn a missing
# device or library into a failure (set FASTBLOCKDIFF_REQUIRE_CUDA=0 to dry-run on a machine without a GPU).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-all}"; [ $# -gt 0 ] && shift

find_root() { local d="$HERE"; while [ "$d" != / ]; do [ -f "$d/FastBlockDiff.sln" ] && { echo "$d"; return; }; d="$(dirname "$d")"; done; }

build() {
  local root; root="$(find_root)"
  [ -n "$root" ] || { echo "run.sh build must run inside the repository" >&2; exit 2; }
  local out="$root/out/gpu-tests"
  rm -rf "$out"
  dotnet publish "$root/tests/FastBlockDiff.Tests.csproj" -c Release -r linux-x64 --self-contained \
    -p:PublishSingleFile=false -o "$out" -nologo -v q
  cp "$root/tests/gpu/run.sh" "$out/run.sh"
  tar -C "$root/out" -czf "$root/out/gpu-tests.tar.gz" gpu-tests
  echo "published: $out/FastBlockDiff.Tests ($(du -sh "$out" | cut -f1)); carry $root/out/gpu-tests.tar.gz"
}

run() {
  local bin=""
  for c in "$HERE/FastBlockDiff.Tests" "$(find_root 2>/dev/null)/out/gpu-tests/FastBlockDiff.Tests"; do
    [ -x "$c" ] && { bin="$c"; break; }
  done
  [ -n "$bin" ] || { echo "no published test binary; run: tests/gpu/run.sh build" >&2; exit 2; }
  local dir="${1:-$PWD/gpu-results/$(date -u +%Y%m%dT%H%M%SZ)}"; [ $# -gt 0 ] && shift
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  {
    echo "date: $(date -u +%FT%TZ)"; echo "host: $(hostname)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || echo "nvidia-smi: not found"
  } > "$dir/device.txt" 2>&1
  export FASTBLOCKDIFF_REQUIRE_CUDA="${FASTBLOCKDIFF_REQUIRE_CUDA:-1}" FASTBLOCKDIFF_REQUIRE_NVRTC="${FASTBLOCKDIFF_REQUIRE_NVRTC:-1}"
  export FASTBLOCKDIFF_PTX_CACHE="${FASTBLOCKDIFF_PTX_CACHE:-$dir/ptx-cache}" FASTBLOCKDIFF_BENCH_OUT="${FASTBLOCKDIFF_BENCH_OUT:-$dir}"
  set +e
  "$bin" -noColor -result-ctrf "$dir/summary.json" -result-trx "$dir/results.trx" "$@" 2>&1 | tee "$dir/console.log"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "exit code $rc; summary: $dir/summary.json"
  return "$rc"
}

case "$mode" in
  build) build ;;
  run) run "$@" ;;
  all) build; run "$@" ;;
  *) echo "usage: $0 build | run [DIR] [xunit args] | all [DIR]" >&2; exit 2 ;;
esac
