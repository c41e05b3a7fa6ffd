#!/usr/bin/env bash
# Builds the solution in Release and runs every test; ends with "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build FastBlockDiff.sln -c Release -nologo -v q -clp:ErrorsOnly || { echo "0 passed, 1 failed"; exit 1; }
log=$(mktemp)
dotnet test --project tests/FastBlockDiff.Tests.csproj -c Release --no-build 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
count() { grep -aE "^\s+$1: [0-9]+" "$log" | awk '{s += $2} END {print s + 0}'; }
passed=$(count succeeded); failed=$(count failed); skipped=$(count skipped)
rm -f "$log"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi   # the runner itself failed
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
