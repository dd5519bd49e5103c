#!/usr/bin/env bash
# `make bench`: run every benchmark in bench/ one after another (they compete for the cores, so never
# in parallel). Each prints a JSON line and appends a row to BENCHMARKS.md. Extra arguments go to every
# script, e.g. `bash scripts/bench.sh --no-record`. A failing benchmark does not stop the others; the
# exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
status=0
for script in bench/*.py; do
  case "$(basename "$script")" in
    common.py|_*) continue ;;  # shared helpers, not benchmarks
  esac
  echo "== $script" >&2
  if ! "$PYTHON" "$script" "$@"; then
    echo "!! $script failed" >&2
    status=1
  fi
done
exit "$status"
