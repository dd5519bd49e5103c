#!/usr/bin/env bash
# `make demo`: the whole pipeline on a small synthetic dataset, on CPU: about 12 minutes on 2 cores
# (measured; the budget is 15 minutes).
#
#   synth -> prepare -> 5-fold CV (city split) -> full-data fit -> predict val and test
#         -> evaluate (official script and fast engine) -> submission zip -> report.pdf
#
# The training and evaluation stages run the two notebooks with papermill, so the demo exercises exactly
# the code paths a user runs cell by cell. Outputs:
#   demo/cityscapes/            synthetic dataset (Cityscapes layout)
#   demo/runs/                  folds.json, fold_<k>/, full/, summary.json (TensorBoard: tensorboard --logdir demo/runs)
#   demo/predictions/, demo/test_predictions/, demo/predictions-eval/val.json
#   demo/01_train.out.ipynb, demo/02_evaluate.out.ipynb   executed notebooks
#   demo/submission.zip         test predictions zipped for the server
#   report.pdf, report_figures/, report_tables/ at the repository root. report.pdf is committed: it holds nothing that
#   depends on the machine, the time or the commit and is written with fixed metadata, so a rebuild from an
#   unchanged tree gives the same bytes and leaves `git status` clean.
#
# Sizes are chosen so a from-scratch model (no ImageNet weights: nothing is downloaded) learns enough in a
# few epochs for the mIoU to mean something (about 27% CV, 30% val: large classes learned, thin ones not
# yet); 12 epochs with a cosine schedule gained only one point for 50% more time. Override with
# DEMO_EPOCHS, DEMO_SIZE, DEMO_PER_CITY. Expects the venv's bin on PATH (the Makefile does that).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEMO=demo
SIZE=${DEMO_SIZE:-256x128}
PER_CITY=${DEMO_PER_CITY:-4}
EPOCHS=${DEMO_EPOCHS:-8}
FOLDS=5
PAPERMILL_OPTS=(--stdout-file - --no-progress-bar)
START=$SECONDS

stage() { printf '\n==> [%3d s] %s\n' "$((SECONDS - START))" "$*"; }

for tool in cityseg papermill python; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH; run \`make demo\` (it installs .venv first)." >&2; exit 2; }
done

# report.pdf at the root may be the report of a real run: replace it only if it is a demo report (the
# committed one or an earlier build; its PDF title says SYNTHETIC and sits uncompressed in the info dictionary).
if [[ -e report.pdf ]] && ! grep -aqF "cityseg report - SYNTHETIC" report.pdf; then
    echo "error: report.pdf exists and is not a demo report; move it away (the demo writes report.pdf)." >&2
    exit 2
fi

# demo/ holds only what this script writes, so a re-run starts from a clean slate instead of resuming.
stage "cleaning $DEMO/ (written by an earlier demo)"
rm -rf "$DEMO"
mkdir -p "$DEMO"

stage "synth: synthetic Cityscapes-format dataset, $SIZE, $PER_CITY images per city -> $DEMO/cityscapes"
cityseg synth "$DEMO/cityscapes" --size "$SIZE" --train-cities 10 --val-cities 3 --test-cities 2 \
    --per-city "$PER_CITY" --no-progress

stage "prepare: labelTrainIds PNGs from the polygon JSONs"
cityseg prepare "$DEMO/cityscapes"

# The notebooks' printed lines (one per epoch, then the results) stream here; progress bars stay in the
# executed notebooks. Paths below are relative to notebooks/ (papermill --cwd notebooks), like the notebooks' own defaults.
stage "notebooks/01_train.ipynb: $FOLDS-fold CV by city, $EPOCHS epochs from scratch, then the full-data fit"
papermill notebooks/01_train.ipynb "$DEMO/01_train.out.ipynb" --cwd notebooks -k python3 "${PAPERMILL_OPTS[@]}" \
    -p DATA_ROOT "../$DEMO/cityscapes" -p RUNS_DIR "../$DEMO/runs" -p RECIPE seed -p FOLDS "$FOLDS" \
    -p SPLIT city -p EPOCHS "$EPOCHS" -p DEVICE cpu -p ENCODER_WEIGHTS none -p WORKERS 0 \
    -y "OVERRIDES: {lr: 0.001, batch_size: 4}"
echo "executed notebook: $DEMO/01_train.out.ipynb; runs: $DEMO/runs"

stage "notebooks/02_evaluate.ipynb: predict val and test, evaluate (official + fast), submission, report"
papermill notebooks/02_evaluate.ipynb "$DEMO/02_evaluate.out.ipynb" --cwd notebooks -k python3 "${PAPERMILL_OPTS[@]}" \
    -p DATA_ROOT "../$DEMO/cityscapes" -p RUNS_DIR "../$DEMO/runs" -p CHECKPOINT "../$DEMO/runs/full/best.pt" \
    -p DEVICE cpu -p PRED_DIR "../$DEMO/predictions" -p TEST_PRED_DIR "../$DEMO/test_predictions" \
    -p REPORT ../report.pdf -p SUBMISSION "../$DEMO/submission.zip"
echo "executed notebook: $DEMO/02_evaluate.out.ipynb"

stage "done in $((SECONDS - START)) s"
python - "$DEMO" <<'EOF'
import sys
from pathlib import Path

from cityseg.report import headline_text, is_synthetic_run, load_evaluation, load_runs

demo = Path(sys.argv[1])
runs = load_runs(demo / "runs")
evaluation = load_evaluation(demo / "predictions-eval" / "val.json")
print(headline_text(runs, evaluation, is_synthetic_run(runs, evaluation, demo / "cityscapes")))
print(f"""
report:            report.pdf (figures in report_figures/; committed, so `git status` shows whether it changed)
tensorboard:       tensorboard --logdir {demo}/runs
executed notebooks: {demo}/01_train.out.ipynb, {demo}/02_evaluate.out.ipynb
runs:              {demo}/runs (final model: {demo}/runs/full/best.pt)
predictions:       {demo}/predictions, {demo}/test_predictions
evaluation:        {demo}/predictions-eval/val.json
submission:        {demo}/submission.zip""")
EOF
