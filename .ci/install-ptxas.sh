#!/usr/bin/env bash
# Optional: extracts ptxas, cuobjdump and nvdisasm 11.8 (cuobjdump -sass runs the nvdisasm next to it) from Debian
# bookworm's non-free nvidia-cuda-toolkit package (downloaded, not installed: none of its dependencies are needed; the
# binaries are static) into ${FASTBLOCKDIFF_PTXAS_DIR:-/opt/fastblockdiff-ptxas}. With them there (or on PATH, or
# FASTBLOCKDIFF_PTXAS / FASTBLOCKDIFF_CUOBJDUMP set), NvrtcCompileTests.PtxAssembles runs the PTX of every kernel
# through ptxas for sm_80/sm_90 (the step a driver's JIT does) and AttentionSassTests checks the attention kernels'
# spills and SASS (tensor-core, ldmatrix and cp.async instructions). Needs the sources set up by install-nvrtc.sh.
set -euo pipefail
DEST="${FASTBLOCKDIFF_PTXAS_DIR:-/opt/fastblockdiff-ptxas}"
if [ -x "$DEST/ptxas" ] && [ -x "$DEST/cuobjdump" ] && [ -x "$DEST/nvdisasm" ]; then echo "$DEST"; exit 0; fi
"$(dirname "$0")/install-nvrtc.sh"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && apt-get download -qq nvidia-cuda-toolkit >/dev/null 2>&1 \
  && dpkg-deb --fsys-tarfile nvidia-cuda-toolkit_*.deb | tar -x ./usr/bin/ptxas ./usr/bin/cuobjdump ./usr/bin/nvdisasm )
mkdir -p "$DEST"
for tool in ptxas cuobjdump nvdisasm; do cp "$TMP/usr/bin/$tool" "$DEST/$tool"; chmod +x "$DEST/$tool"; done
echo "$DEST"
