#!/usr/bin/env bash
# The GPU measurements and checks of the "fast by default" work and of --deterministic: about 9 minutes on one
# H100, and at most 12 (the steps' time limits add up to 720 s, plus a few seconds of set-up).
# Nothing here runs in `make test` (CI has no GPU); run it on a CUDA machine with the requirements installed:
#
#   bash scripts/gpu_check.sh OUT_DIR
#
#   1. train_loop (limit 180 s, ~130 s expected): bench/train_loop.py --variants memory,defaults,best. The
#      trainer's own dataset and loader building feeds the real training step: 1024x512 crops, batch 16,
#      strong recipe, bf16. defaults = the plain settings a notebook user gets (machine fields left at auto,
#      resolved as for a Cityscapes fold); best = --cache DIR --gpu-aug --compile with cores-2 workers;
#      memory = the same compiled step fed from memory. Images/s, data wait, MFU, the compile time (first
#      compiled step), defaults/best (target >= 0.9) and defaults vs 300 img/s
#   2. profile (limit 90 s, ~40 s with step 1's graphs in inductor's on-disk cache): bench/profile_step.py:
#      torch.profiler over 10 compiled training steps (the defaults' step: gpu-aug, bf16, channels-last);
#      OUT_DIR/profile_top_kernels.md (top 20 CUDA kernels) and OUT_DIR/profile_summary.md (where the time
#      goes: GPU busy share, MFU, kernel time by kind)
#   3. cli_cv (limit 120 s, ~90 s): `cityseg cv` through the CLI on CUDA with --compile and otherwise the plain
#      defaults (tiny synthetic 1024x512 set, 2 folds x 2 epochs + full fit), checks that config.json holds
#      the resolved defaults (compile, gpu_aug, cache on), then predict -> evaluate (both engines agree)
#   4. torchrun (limit 60 s, ~40 s): `torchrun --nproc_per_node=1 -m cityseg cv` on the same set: the DDP path
#      with NCCL on one GPU (a one-process torchrun job joins the process group); checks "nccl" in config.json
#   5. inference (limit 60 s, ~30 s): bench/train_step.py --infer-path predict: whole 2048x1024 images through
#      cityseg.prediction.inference.predict_logits + argmax (what `cityseg predict` runs per batch), bf16 eager, at
#      batch 1 (predict's default), 4 and 8 (target >= 200 img/s)
#   6. optimizer (limit 30 s, ~10 s): bench/optimizer.py: one Adam/AdamW/SGD step over the U-Net's parameters,
#      torch's default (foreach on CUDA) against the fused kernel training uses
#   7. deterministic (limit 180 s, ~120 s): bench/deterministic.py: `cityseg train --full --deterministic` twice and
#      once SIGKILLed after its first epoch then resumed, on 64 synthetic 1024x512 frames (strong recipe, 512x256
#      crops, batch 8, 3 epochs): last.pt and best.pt equal tensor for tensor (their log rows carry timings), and
#      the slowdown against the same run without --deterministic
#
# The limits add up to 720 s, more than one 10-minute call allows: run it in two, e.g.
#   ONLY=train_loop,profile,cli_cv bash scripts/gpu_check.sh OUT; ONLY=torchrun,inference,optimizer,deterministic ...
#
# Each step has its own time limit, so one hang cannot eat the others. Benchmark rows go to
# OUT_DIR/BENCHMARKS.gpu.md (append them to BENCHMARKS.md by hand after reading them), every step's output
# to OUT_DIR/gpu_check.log, and the exit status and seconds of each step to OUT_DIR/status.txt.
#
# Dry run on a CPU (tiny sizes, nothing compiled; checks the commands, not the figures):
#   DEVICE=cpu LIMIT_SCALE=10 bash scripts/gpu_check.sh /tmp/gpu-check-dry
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -eq 1 ]] || { echo "usage: bash scripts/gpu_check.sh OUT_DIR (a folder for the logs and benchmark rows)" >&2; exit 2; }
OUT=$1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
ONLY=${ONLY:-}  # only these steps, by name: ONLY=cli_cv or ONLY=cli_cv,deterministic
LIMIT_SCALE=${LIMIT_SCALE:-1}  # multiplies every step's time limit (a dry run on a slow CPU)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ $DEVICE == cuda ]]; then
    CROP=1024x512 BATCH=16 FRAMES=32 STEPS=100 WARMUP=10 PROFILE_STEPS=10 INFER_SIZE=2048x1024 INFER_BATCHES=1,4,8
    CLI_SIZE=1024x512 CLI_PER_CITY=8 COMPILE=--compile BEST=best
    DETERMINISTIC="--size 1024x512 --crop 512x256 --frames 64 --batch 8 --epochs 3"
else  # the dry run: every command with tiny sizes; compiling on a CPU takes minutes, so nothing is compiled
    CROP=128x64 BATCH=2 FRAMES=4 STEPS=2 WARMUP=1 PROFILE_STEPS=2 INFER_SIZE=256x128 INFER_BATCHES=1,2
    CLI_SIZE=256x128 CLI_PER_CITY=4 COMPILE=--no-compile BEST=cache+gpu-aug
    DETERMINISTIC="--size 128x64 --crop 64x32 --frames 8 --batch 2 --epochs 2"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cityseg-gpu-check.XXXXXX")
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
MD="$OUT/BENCHMARKS.gpu.md"
cityseg() { "$PYTHON" -m cityseg "$@"; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log everything, record the exit status
    local name=$1 limit=$(($2 * LIMIT_SCALE)) start=$SECONDS status
    shift 2
    [[ -z $ONLY || ",$ONLY," == *",$name,"* ]] || return 0
    echo "== $name (limit ${limit}s)" | tee -a "$LOG" >&2
    timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    echo "$name exit $status after $((SECONDS - start)) s (limit $limit)" | tee -a "$OUT/status.txt" "$LOG" >&2
    return 0
}

runtime_of() {  # runtime_of RUN_DIR KEY EXPECTED: fail unless config.json's runtime record has KEY == EXPECTED
    "$PYTHON" - "$@" <<'EOF'
import json, sys
run_dir, key, expected = sys.argv[1:]
runtime = json.load(open(f"{run_dir}/config.json"))["runtime"]
print(f"{run_dir}: runtime {runtime}")
value = runtime[key]
ok = str(value).lower() == expected if expected != "set" else value is not None
sys.exit(0 if ok else f"{run_dir}: runtime {key} is {value!r}, expected {expected}")
EOF
}

cli_data() {  # a tiny synthetic set: 4 train cities of CLI_PER_CITY frames (2 folds by city), 1 val city
    [[ -d $WORK/data ]] && return 0
    cityseg synth "$WORK/data.partial" --size "$CLI_SIZE" --train-cities 4 --val-cities 1 --test-cities 1 \
        --per-city "$CLI_PER_CITY" --no-progress && cityseg prepare "$WORK/data.partial" && mv "$WORK/data.partial" "$WORK/data"
}

cli_cv() {  # the CLI on CUDA end to end with compile and the plain defaults otherwise
    set -e
    cli_data
    cityseg cv "$WORK/data" --out "$WORK/runs" --folds 2 --recipe strong --epochs 2 --batch-size "$BATCH" \
        --crop "$CROP" --encoder-weights none $COMPILE
    cat "$WORK/runs/fold_0/log.jsonl"
    if [[ $DEVICE == cuda ]]; then
        runtime_of "$WORK/runs/fold_0" compile true && runtime_of "$WORK/runs/full" gpu_aug true
        runtime_of "$WORK/runs/full" cache set && runtime_of "$WORK/runs/full" amp_dtype bfloat16
    fi
    cityseg predict "$WORK/runs/full/best.pt" "$WORK/data" --split val --out "$WORK/pred" --no-progress
    cityseg evaluate "$WORK/pred" "$WORK/data" --split val --json "$WORK/val.json"
}

torchrun_cv() {  # one process under torchrun: DDP with NCCL (gloo on a CPU) on one device
    set -e
    cli_data
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m cityseg cv "$WORK/data" \
        --out "$WORK/runs-ddp" --folds 2 --recipe strong --epochs 2 --batch-size "$BATCH" --crop "$CROP" \
        --encoder-weights none --no-compile
    runtime_of "$WORK/runs-ddp/full" process_group "$([[ $DEVICE == cuda ]] && echo nccl || echo gloo)"
}

{
    date -u
    git log -1 --format='working tree at %h %s' 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, segmentation_models_pytorch as smp, cityscapesscripts; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'smp', smp.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
} >>"$LOG" 2>&1

export -f cityseg cli_data cli_cv torchrun_cv runtime_of
export WORK PYTHON DEVICE CROP BATCH COMPILE CLI_SIZE CLI_PER_CITY
step train_loop 180 "$PYTHON" bench/train_loop.py --device "$DEVICE" --variants "memory,defaults,$BEST" \
    --crop "$CROP" --batch "$BATCH" --frames "$FRAMES" --steps "$STEPS" --warmup "$WARMUP" \
    --data "$WORK/bench-data" --md "$MD"
step profile 90 "$PYTHON" bench/profile_step.py --device "$DEVICE" --crop "$CROP" --batch "$BATCH" \
    --steps "$PROFILE_STEPS" --warmup "$WARMUP" --out "$OUT" --md "$MD" \
    $([[ $DEVICE == cuda ]] || echo --no-compile)
step cli_cv 120 bash -c cli_cv
step torchrun 60 bash -c torchrun_cv
step inference 60 "$PYTHON" bench/train_step.py --device "$DEVICE" --no-train --infer-path predict \
    --infer-size "$INFER_SIZE" --infer-batch "$INFER_BATCHES" --variants channels_last+bf16 --warmup 3 --iters 20 \
    --md "$MD"
step optimizer 30 "$PYTHON" bench/optimizer.py --device "$DEVICE" --md "$MD"
step deterministic 180 "$PYTHON" bench/deterministic.py --device "$DEVICE" $DETERMINISTIC --data "$WORK/bench-data" \
    --md "$MD"
rm -rf "$WORK"
cat "$OUT/status.txt"
