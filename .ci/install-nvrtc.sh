#!/usr/bin/env bash
# Installs NVRTC 11.8 (Debian bookworm non-free package libnvrtc11.2) so that the NVRTC compile
# tests can compile every kernels/Cuda/Source/*.cu without a GPU. Idempotent and quiet.
set -euo pipefail
if ls /usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2* >/dev/null 2>&1; then exit 0; fi
SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
SRC=/etc/apt/sources.list.d/fastblockdiff-nonfree.sources
if [ ! -f "$SRC" ]; then
  # the machine's own bookworm mirror, with the contrib and non-free components added
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$MIRROR" ]; then MIRROR=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true); fi
  if [ -z "$MIRROR" ]; then echo "install-nvrtc: no bookworm apt source found to extend" >&2; exit 1; fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$MIRROR" | $SUDO tee "$SRC" >/dev/null
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends libnvrtc11.2 >/dev/null
