#!/usr/bin/env bash
# Installs NVRTC 11.8 (Debian bookworm non-free package libnvrtc11.2) so that the NVRTC compile
# tests can compile every kernels/cuda/*.cu without a GPU. Idempotent and quiet.
set -euo pipefail
if ls /usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2* >/dev/null 2>&1; then exit 0; fi
SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
SRC=/etc/apt/sources.list.d/fastblockdiff-nonfree.sources
if [ ! -f "$SRC" ]; then
  $SUDO tee "$SRC" >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends libnvrtc11.2 >/dev/null
