#!/usr/bin/env bash
# The GPU check (issue 28): what the notebook's plain settings do on one GPU, every figure in one call of at most
# 8 minutes on one H100. docs/gpu.md says what each figure means, its goal, and which docs it fills.
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# Steps in order, each with its time limit and the time expected on one H100 (from the H200 rows of BENCHMARKS.md
# scaled to these sizes; the cold compile, ~90 s, is the guess the check measures):
#   data           60 s /  20 s  bench/cli_cv.py --prepare-only: 128 synthetic 2048x1024 frames in 8 cities, and the
#                                same hard-linked 8 times (1024 frames), labelTrainIds written
#   cli_cv        270 s / 195 s  bench/cli_cv.py: `cityseg cv --recipe strong --folds 8 --only-folds 0` as the
#                                notebook calls it (machine fields at auto), then --no-compile, then --cache DIR
#                                --gpu-aug --compile --workers cores-2; each stopped after 3 epochs of 112 steps:
#                                img/s, data wait, peak memory, what runtime: chose, compile time and the rule
#   recipes        60 s /  35 s  bench/recipe_cost.py: peak memory and img/s of seed (2048x1024, batch 4, fp32) and
#                                strong (768x768, batch 8, bf16), capped as a 24 GB card; smaller variants of one
#                                that does not fit (half batch, --amp, 1024x512 crop)
#   inference      50 s /  30 s  bench/train_step.py --infer-path predict: 2048x1024 through predict_logits + argmax
#                                at batch 1, 2, 4, 8, fp32 and bf16; the batch predict's default should be
#   model_zoo      50 s /  35 s  bench/model_zoo.py --gpu-columns: the zoo's 5 models, training img/s at 1024x512
#                                bf16 batch 8 and inference img/s at 2048x1024
#   deterministic 100 s /  65 s  bench/deterministic.py: `cityseg train --full --deterministic` twice and once
#                                SIGKILLed after epoch 1 then resumed (128 frames, 768x768, batch 8, 3 epochs): equal
#                                checkpoint tensors; the slowdown against the same run without the flag
#   profile        90 s /  35 s  bench/profile_step.py: the compiled strong step (768x768, batch 8; inductor's cache
#                                warm from cli_cv) under torch.profiler: top CUDA kernels, where the time goes
# About 7 minutes expected in all. BUDGET (540 s) caps the script: a step gets at most what is left of it, and one
# with under 15 s left is skipped (status.txt says so), so a call with timeout_s 600 always brings the files back.
# Opt-in steps, run only when ONLY names them: torchrun (`cityseg train --full` for one epoch under a one-process
# torchrun: DDP over NCCL; 60 s; ONLY=data,torchrun) and optimizer (bench/optimizer.py; 30 s).
#
# Every step writes its row into OUT_DIR/BENCHMARKS.gpu.md (machine, command, ratio against a baseline of the same
# run); append them to BENCHMARKS.md after reading them: grep '^| 20' OUT_DIR/BENCHMARKS.gpu.md >> BENCHMARKS.md.
# Everything printed goes to OUT_DIR/gpu_check.log, exit status and seconds of each step to OUT_DIR/status.txt,
# the profile's tables to OUT_DIR/profile_*.md. Environment:
#   ONLY=cli_cv,profile    these steps only (reruns; cli_cv and deterministic build their data when data did not run)
#   WORK=DIR               keep the synthetic data and inductor's cache in DIR between calls (default: a new
#                          temporary folder, removed at the end)
#   BUDGET=540             seconds for the whole script;  LIMIT_SCALE=1 multiplies every limit and the budget
#   PYTHON=python3         the interpreter (the device image's holds torch)
#   REV=abc1234            the commit the rows name (default: git's, "unknown" without .git)
# Packages the device image lacks (segmentation-models-pytorch, cityscapesscripts, pyquaternion) are installed
# from .whl/ when it exists: `bash scripts/gpu_check.sh --fetch-wheels` fills it here (docs/gpu.md).
#
# Dry run on a CPU (tiny sizes, nothing compiled; it checks the commands, not the figures, and its rows go to
# OUT_DIR/BENCHMARKS.dry-run.md, marked DRY RUN, never to be appended to BENCHMARKS.md):
#   DEVICE=cpu LIMIT_SCALE=10 bash scripts/gpu_check.sh /tmp/gpu-check-dry
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
WHEELS="segmentation-models-pytorch==0.6.0 cityscapesscripts==2.3.0 pyquaternion==0.9.9"
if [[ ${1:-} == --fetch-wheels ]]; then  # here, where pip reaches PyPI: the packages the device image lacks
    exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl $WHEELS
fi
if [[ $# -ne 1 ]]; then
    echo "usage: bash scripts/gpu_check.sh OUT_DIR (a folder for the logs and benchmark rows)" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DEVICE=${DEVICE:-cuda}
ONLY=${ONLY:-}
LIMIT_SCALE=${LIMIT_SCALE:-1}
BUDGET=$((${BUDGET:-540} * LIMIT_SCALE))
DEFAULT_STEPS=data,cli_cv,recipes,inference,model_zoo,deterministic,profile
KEEP_WORK=${WORK:+1}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/cityseg-gpu-check.XXXXXX")}
mkdir -p "$WORK"
LOG="$OUT/gpu_check.log"
if [[ -z ${REV:-} ]]; then  # the commit the rows name, "+changes" when the tree differs from it
    REV=$(git rev-parse --short HEAD 2>/dev/null) || REV=unknown
    [[ $REV == unknown ]] || git diff --quiet HEAD 2>/dev/null || REV+=+changes
fi
NOTE="run by scripts/gpu_check.sh at $REV"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
if [[ $DEVICE == cuda ]]; then
    MD="$OUT/BENCHMARKS.gpu.md"
    DATA="--size 2048x1024 --frames 128 --per-city 16"
    CLI_CV="--copies 8 --epochs-logged 3 --run-timeout 180 --budget 250"
    RECIPES="--device cuda"
    INFER="--device cuda --infer-size 2048x1024 --infer-batch 1,2,4,8 --warmup 3 --iters 10"
    ZOO="--device cuda"
    DETERMINISTIC="--device cuda --crop 768x768 --batch 8 --epochs 3"
    PROFILE="--device cuda --crop 768x768 --batch 8 --warmup 3 --steps 10"
    TORCHRUN=""
else  # the dry run: every command at tiny sizes; compiling on a CPU takes minutes, so nothing is compiled
    MD="$OUT/BENCHMARKS.dry-run.md"
    NOTE="DRY RUN (DEVICE=cpu, tiny sizes: checks the commands, not the figures; never append to BENCHMARKS.md); $NOTE"
    DATA="--size 256x128 --frames 8 --per-city 1"
    CLI_CV="--copies 2 --epochs-logged 2 --run-timeout 900 --budget 2500 --crop 64x32 --batch 1"
    RECIPES="--device cpu --shrink 16 --max-batch 2 --fallbacks always --warmup 1 --steps 1"
    INFER="--device cpu --infer-size 128x64 --infer-batch 1,2 --warmup 1 --iters 1"
    ZOO="--device cpu --train-size 64x32 --batch 2 --infer-size 128x64 --warmup 1 --iters 1"
    DETERMINISTIC="--device cpu --crop 64x32 --batch 2 --epochs 2"
    PROFILE="--device cpu --no-compile --crop 64x32 --batch 1 --warmup 1 --steps 1"
    TORCHRUN="--crop 64x32 --batch-size 2"
fi
RECORD=(--md "$MD" --note "$NOTE")

wanted() { [[ ",${ONLY:-$DEFAULT_STEPS}," == *",$1,"* ]]; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit (within the budget), log it, record its exit status
    local name=$1 limit=$(($2 * LIMIT_SCALE)) start=$SECONDS left status
    shift 2
    wanted "$name" || return 0
    left=$((BUDGET - SECONDS))
    if ((left < 15)); then
        echo "$name skipped: ${left} s of the ${BUDGET} s budget left" | tee -a "$OUT/status.txt" "$LOG" >&2
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s, $((SECONDS)) s into the check)" | tee -a "$LOG" >&2
    timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    echo "$name exit $status after $((SECONDS - start)) s (limit $limit)" | tee -a "$OUT/status.txt" "$LOG" >&2
}

torchrun_cv() {  # one process under torchrun: DDP with NCCL (gloo on a CPU) on one device
    local root out="$WORK/torchrun"
    root=$(ls -d "$WORK"/data/synth_*_x*_prepared/cityscapes | head -1)
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m cityseg train "$root" --out "$out" --full \
        --recipe strong --epochs 1 --warmup-epochs 0 --encoder-weights none --no-compile $TORCHRUN || return
    "$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1]))['runtime']; print(r); \
sys.exit(r['process_group'] not in ('nccl', 'gloo'))" "$out/config.json"
}

{
    date -u
    echo "working tree at $REV; device $DEVICE; work folder $WORK"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
} >>"$LOG" 2>&1
if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if ! "$PYTHON" -c "import torch, segmentation_models_pytorch as smp, cityscapesscripts.helpers.annotation, cv2; \
print('torch', torch.__version__, 'smp', smp.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() \
else 'no GPU')" >>"$LOG" 2>&1; then
    echo "setup: a package is missing (see $LOG); fetch the wheels with bash scripts/gpu_check.sh --fetch-wheels" \
        | tee -a "$OUT/status.txt" >&2
    exit 2
fi
export -f torchrun_cv
export WORK PYTHON TORCHRUN

step data 60 "$PYTHON" bench/cli_cv.py --prepare-only --data "$WORK/data" $DATA $CLI_CV
step cli_cv 270 "$PYTHON" bench/cli_cv.py --data "$WORK/data" $DATA $CLI_CV "${RECORD[@]}"
step recipes 60 "$PYTHON" bench/recipe_cost.py $RECIPES "${RECORD[@]}"
step inference 50 "$PYTHON" bench/train_step.py --no-train --infer-path predict \
    --variants channels_last,channels_last+bf16 $INFER "${RECORD[@]}"
step model_zoo 50 "$PYTHON" bench/model_zoo.py --gpu-columns $ZOO "${RECORD[@]}"
step deterministic 100 "$PYTHON" bench/deterministic.py --data "$WORK/data" $DATA $DETERMINISTIC "${RECORD[@]}"
step profile 90 "$PYTHON" bench/profile_step.py $PROFILE --out "$OUT" "${RECORD[@]}"
step torchrun 60 bash -c torchrun_cv
step optimizer 30 "$PYTHON" bench/optimizer.py --device "$DEVICE" "${RECORD[@]}"
[[ -n $KEEP_WORK ]] || rm -rf "$WORK"
echo "rows: $MD; $SECONDS s in all" | tee -a "$LOG"
cat "$OUT/status.txt"
