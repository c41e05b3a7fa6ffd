#!/usr/bin/env bash
# Builds the bench as one self-contained linux-x64 file (no .NET needed where it runs) into bench/publish/,
# for the GPU machine: carry bench/publish with the run (it is git-ignored), then run bench/run-gpu.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet publish bench/FastBlockDiff.Bench.csproj -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true -p:EnableCompressionInSingleFile=true -p:InvariantGlobalization=true \
  -o bench/publish -v q -nologo
ls -la bench/publish/FastBlockDiff.Bench
