#!/usr/bin/env bash
# Here, before a visit: the test suite on the GPU machine's package versions (torch 2.11, the
# libraries its image has, transformers 5.24 as a visit carries it), on this CPU, in .venv-gpu/
# (ignored by git; about 5 GB: the CUDA build of torch and its libraries, which import without
# a GPU). A visit is minutes of device time: an API that differs between torch 2.11 and the
# 2.13 of scripts/setup.sh shows up here, not there. Python is this machine's (3.11; the GPU
# machine's is 3.12).
#   bash benchmarks/gpu/rehearse.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv-gpu/bin/python ]; then
    python3 -m venv .venv-gpu
    # the versions the GPU machine's image holds (docs/gpu.md); numpy's 2.5 needs Python 3.12
    .venv-gpu/bin/pip install -q torch==2.11.0 tokenizers==0.23.2 safetensors==0.8.0 \
        accelerate==1.15.0 huggingface_hub==1.33.0 transformers==5.24.0
    .venv-gpu/bin/pip install -q -e ".[dev]" torch==2.11.0
fi
.venv-gpu/bin/python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
HF_HUB_OFFLINE=1 .venv-gpu/bin/python -m pytest -q -p no:cacheprovider "$@"
