#!/usr/bin/env bash
# Installs Debian's chromium for the playground's browser test (Microsoft.Playwright drives it through
# ExecutablePath; no browser is downloaded). Idempotent and quiet.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
