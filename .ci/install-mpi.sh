#!/usr/bin/env bash
# Open MPI (mpirun + libmpi.so.40) for the data-parallel tests. Idempotent: does nothing when mpirun is already there.
set -euo pipefail
if command -v mpirun >/dev/null && ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40'; then exit 0; fi
SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null
mpirun --version | head -1
