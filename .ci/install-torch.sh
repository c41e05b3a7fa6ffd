#!/usr/bin/env bash
# PyTorch 1.13 (CPU) and numpy for /usr/bin/python3: the bench's PyTorch peers are run for one step by
# tests/CpuComparePeerTests.cs. Idempotent: does nothing when /usr/bin/python3 already imports torch.
set -euo pipefail
if /usr/bin/python3 -c "import torch, numpy" 2>/dev/null; then exit 0; fi
SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-numpy >/dev/null
/usr/bin/python3 -c "import torch; print('torch', torch.__version__)"
