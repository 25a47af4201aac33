#!/usr/bin/env bash
# On the GPU machine, from the repository root, after benchmarks/gpu/bundle.sh here: one visit,
# each step under a timeout, logs and results into $OUT.
#   bash benchmarks/gpu/visit.sh demo    # carry .whl .gpu/demo: the demo pipeline (no few-shot
#                                        # grid) and the evaluation benchmark
#   bash benchmarks/gpu/visit.sh train   # carry .whl .gpu/demo: training vs transformers.Trainer,
#                                        # the 88M Llama, batch 32 x 1024, bf16, eager and compiled
#   bash benchmarks/gpu/visit.sh gpu     # carry .whl .gpu/gpu: configs/gpu.yaml end to end
set -uo pipefail
part=${1:?say demo, train or gpu}
OUT=${OUT:-/tmp/xelm-visit}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    nproc
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

case $part in
demo)
    timeout 420 python3 -m xelm run configs/demo.yaml --out .gpu/demo --set icl=null 2>&1 |
        tee "$OUT/demo.log"
    cp .gpu/demo/report.md .gpu/demo/results.json "$OUT/" 2>/dev/null
    tar -C .gpu/demo -czf "$OUT/stamps.tgz" $(cd .gpu/demo && find . -name '.*.stage.json')
    timeout 120 python3 benchmarks/evaluate.py --run .gpu/demo --rounds 3 2>&1 |
        tee "$OUT/evaluate_bench.txt"
    ;;
train)
    common=(--corpus .gpu/demo/corpus --tokenizer .gpu/demo/tokenizer --preset base
        --seq-len 1024 --micro-batch-size 32 --steps 30 --rounds 1)
    # eager; compiled (ours: the decoder, the loss fused; Trainer: the whole model); compiled
    # with our plain loss (the whole model, as Trainer's): which loss to pair with compile
    timeout 150 python3 benchmarks/train_throughput.py "${common[@]}" 2>&1 |
        tee "$OUT/train_eager.txt"
    timeout 200 python3 benchmarks/train_throughput.py "${common[@]}" --compile 2>&1 |
        tee "$OUT/train_compiled.txt"
    timeout 200 python3 benchmarks/train_throughput.py "${common[@]}" --compile --no-fused-loss \
        2>&1 | tee "$OUT/train_compiled_plain.txt"
    ;;
gpu)
    timeout 590 python3 -m xelm run configs/gpu.yaml --out .gpu/gpu 2>&1 | tee "$OUT/gpu.log"
    cp .gpu/gpu/report.md .gpu/gpu/results.json "$OUT/" 2>/dev/null
    tar -C .gpu/gpu -czf "$OUT/stamps.tgz" $(cd .gpu/gpu && find . -name '.*.stage.json')
    ;;
*)
    echo "unknown part $part: say demo, train or gpu" >&2
    exit 2
    ;;
esac
