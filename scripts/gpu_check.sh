#!/usr/bin/env bash
# The GPU measurements and checks of the performance work, in one go: about 6 minutes on one H200.
# Nothing here runs in `make test` (CI has no GPU); run it on a CUDA machine with the requirements installed:
#
#   bash scripts/gpu_check.sh OUT_DIR
#
#   1. bench/train_step.py: training step (1024x512 crops, batch 16) and whole-image 2048x1024 inference,
#      fp32 eager vs channels_last vs channels_last+bf16 vs +torch.compile: images/s, MFU, peak memory
#   2. bench/train_loop.py, compiled then eager: the project's loaders (memmap cache with colour augmentation
#      in the workers or on the GPU; eager also PNG decoding) feeding the real training step vs batches
#      already in memory: images/s, data-wait share, host syncs per step
#   3. the CLI on CUDA end to end on a small synthetic set: cv (2 folds + full fit, strong recipe,
#      --gpu-aug, --cache) -> predict val -> evaluate (official and fast engines must agree)
#
# Each step has its own time limit, so one hang cannot eat the others. Benchmark rows go to
# OUT_DIR/BENCHMARKS.gpu.md (append them to BENCHMARKS.md by hand after reading them), every step's output
# to OUT_DIR/gpu_check.log, and the exit status of each step to OUT_DIR/status.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -eq 1 ]] || { echo "usage: bash scripts/gpu_check.sh OUT_DIR (a folder for the logs and benchmark rows)" >&2; exit 2; }
OUT=$1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu CLI_SIZE=256x128 CLI_CROP=128x128 ONLY=cli: a dry run of step 3 on a CPU
CLI_SIZE=${CLI_SIZE:-1024x512}
CLI_CROP=${CLI_CROP:-512x512}
ONLY=${ONLY:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cityseg-gpu-check.XXXXXX")
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
MD="$OUT/BENCHMARKS.gpu.md"
cityseg() { "$PYTHON" -m cityseg "$@"; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log everything, record the exit status
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo "== $name (limit ${limit}s)" | tee -a "$LOG" >&2
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    echo "$name exit $status after $((SECONDS - start)) s" | tee -a "$OUT/status.txt" "$LOG" >&2
    return 0
}

cli_path() {  # the CLI on CUDA, end to end, on a small synthetic set
    set -e
    cityseg synth "$WORK/data" --size "$CLI_SIZE" --per-city 2 --no-progress
    cityseg prepare "$WORK/data"
    cityseg cv "$WORK/data" --out "$WORK/runs" --folds 2 --recipe strong --epochs 2 --batch-size 8 \
        --crop "$CLI_CROP" --encoder-weights none --device "$DEVICE" --gpu-aug --cache "$WORK/cache"
    cat "$WORK/runs/fold_0/log.jsonl"
    cityseg predict "$WORK/runs/full/best.pt" "$WORK/data" --split val --out "$WORK/pred" --device "$DEVICE" --no-progress
    cityseg evaluate "$WORK/pred" "$WORK/data" --split val --json "$WORK/val.json"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PYTHON" -c "import torch, segmentation_models_pytorch as smp, cityscapesscripts; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'smp', smp.__version__, torch.cuda.get_device_name(0))"
} >>"$LOG" 2>&1

export -f cityseg cli_path
export WORK PYTHON DEVICE CLI_SIZE CLI_CROP
[[ -z $ONLY || $ONLY == train_step ]] && step train_step 240 "$PYTHON" bench/train_step.py --device cuda --batch 16 --train-sizes 1024x512 \
    --infer-batch 8 --compile --warmup 3 --iters 10 --md "$MD"
[[ -z $ONLY || $ONLY == train_loop ]] && step train_loop_compiled 200 "$PYTHON" bench/train_loop.py --compile --no-png \
    --check-syncs --steps 150 --data "$WORK/bench-data" --md "$MD"
[[ -z $ONLY || $ONLY == train_loop ]] && step train_loop_eager 200 "$PYTHON" bench/train_loop.py \
    --check-syncs --steps 150 --data "$WORK/bench-data" --md "$MD"
[[ -z $ONLY || $ONLY == cli ]] && step cli 150 bash -c cli_path
rm -rf "$WORK"
