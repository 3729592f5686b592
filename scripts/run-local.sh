#!/usr/bin/env bash
# `make run`: the CPU predictor on :8101 and every API area on :8080, on one machine.
# State (embedded PostgreSQL, generated secrets) lives in JAN_DATA_DIR (default ./data).
set -euo pipefail
cd "$(dirname "$0")/.."

export JAN_DATA_DIR="${JAN_DATA_DIR:-$PWD/data}"
PREDICTOR_PORT="${PREDICTOR_PORT:-8101}"
GATEWAY_PORT="${PORT:-8080}"
mkdir -p "$JAN_DATA_DIR"

echo "jan-server: starting the CPU predictor on :$PREDICTOR_PORT (SmolLM2-135M-Instruct, WordLlama embeddings)"
PORT="$PREDICTOR_PORT" kserve/.venv/bin/python -m jan_predictor \
  >"$JAN_DATA_DIR/predictor.log" 2>&1 &
predictor=$!
trap 'kill "$predictor" 2>/dev/null || true; wait "$predictor" 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$PREDICTOR_PORT/v2/health/ready" >/dev/null; then break; fi
  if ! kill -0 "$predictor" 2>/dev/null; then
    echo "jan-server: the predictor exited; see $JAN_DATA_DIR/predictor.log" >&2; exit 1
  fi
  sleep 0.5
done
echo "jan-server: predictor ready (log: $JAN_DATA_DIR/predictor.log)"

export JAN_INFERENCE_MODEL_URL="${JAN_INFERENCE_MODEL_URL:-http://127.0.0.1:$PREDICTOR_PORT/openai/v1}"
export LISTEN_ADDRESS="${LISTEN_ADDRESS:-0.0.0.0:$GATEWAY_PORT}"
.venv/bin/jan-server serve all
