#!/usr/bin/env bash
# `make ui`: the Dagster UI (with its daemon: sensors, automation) and the MLflow UI, both on
# 127.0.0.1, with the same DAGSTER_HOME and tracking URI as `make run`. Ctrl-C stops both.
set -euo pipefail
set -m  # each UI in its own process group; a script's background jobs would otherwise ignore INT
cd "$(dirname "$0")/.."
: "${DAGSTER_HOME:=$PWD/dagster_home}" "${MLFLOW_TRACKING_URI:=sqlite:///$PWD/mlflow/mlflow.db}"
: "${DAGSTER_PORT:=3000}" "${MLFLOW_PORT:=5000}"
export DAGSTER_HOME MLFLOW_TRACKING_URI
store="$(dirname "${MLFLOW_TRACKING_URI#sqlite:///}")"
mkdir -p "$store"
pids=()
stop() {  # INT to each group, as Ctrl-C; then TERM and KILL what is still there
  trap - INT TERM EXIT
  for sig in INT TERM KILL; do
    for pid in "${pids[@]}"; do kill "-$sig" -- "-$pid" 2>/dev/null || true; done
    for _ in $(seq 20); do
      alive=0; for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
      ((alive)) || return 0
      sleep 0.5
    done
  done
}
trap stop INT TERM EXIT
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$DAGSTER_PORT" &
pids+=($!)
.venv/bin/mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI" --registry-store-uri "$MLFLOW_TRACKING_URI" \
  --default-artifact-root "$store/artifacts" -h 127.0.0.1 -p "$MLFLOW_PORT" &
pids+=($!)
echo "Dagster UI: http://127.0.0.1:$DAGSTER_PORT   MLflow UI: http://127.0.0.1:$MLFLOW_PORT   (Ctrl-C stops both)"
wait -n "${pids[@]}" || true
