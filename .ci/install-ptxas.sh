#!/usr/bin/env bash
# Optional: extracts ptxas 11.8 from Debian bookworm's non-free nvidia-cuda-toolkit package (downloaded, not installed:
# none of its dependencies are needed) into ${FASTBLOCKDIFF_PTXAS_DIR:-/opt/fastblockdiff-ptxas}. With it on PATH or
# FASTBLOCKDIFF_PTXAS set, NvrtcCompileTests.PtxAssembles runs the PTX of every kernel through ptxas for sm_80/sm_90
# (the step a driver's JIT does), reporting registers and spills. Needs the sources set up by install-nvrtc.sh.
set -euo pipefail
DEST="${FASTBLOCKDIFF_PTXAS_DIR:-/opt/fastblockdiff-ptxas}"
[ -x "$DEST/ptxas" ] && { echo "$DEST/ptxas"; exit 0; }
"$(dirname "$0")/install-nvrtc.sh"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && apt-get download -qq nvidia-cuda-toolkit >/dev/null 2>&1 && dpkg -x nvidia-cuda-toolkit_*.deb x )
mkdir -p "$DEST"; cp "$TMP/x/usr/bin/ptxas" "$DEST/ptxas"; chmod +x "$DEST/ptxas"
echo "$DEST/ptxas"
