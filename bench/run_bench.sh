#!/usr/bin/env bash
# Rerun the benchmark behind the README's results table: every model and ablation on the same
# splits and seeds, written to bench/results/ (results.md, results.json, PNGs) and MLflow.
#
#   bench/run_bench.sh                      # ml-latest-small (the README's run)
#   bench/run_bench.sh --quick              # smoke run: 2 epochs per model, a few minutes
#   DATASETS=ml-latest-small,amazon-toys-2014-5core,amazon-beauty-2014-5core bench/run_bench.sh
#
# Extra arguments go to `lite-rec bench` (e.g. --models lite_llm4rec,generative_semantic,
# --set train.epochs=50, --out DIR). Run it on a quiet machine: timings are part of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true
export GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
BIN="${VENV:-.venv}/bin"
"$BIN/lite-rec" bench --datasets "${DATASETS:-ml-latest-small}" "$@"
