#!/usr/bin/env bash
# The README's main command: set up, then run the CPU demo plan end to end and serve its champion.
#   synth data -> check -> Phase 1 (decision gate) -> Phase 2 (merged data) -> evaluation through the API
#   -> readiness gate -> register + promote -> `xraydet serve` answers /v1/detect.
# Everything goes to ./xraydet-demo (runs, MLflow SQLite store, plan state, reports). Takes < 10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export YOLO_OFFLINE=true MPLBACKEND=Agg XRAYDET_HOME="$PWD/xraydet-demo"
mkdir -p "$XRAYDET_HOME"
unset MLFLOW_TRACKING_URI

start=$(date +%s)
# A synthetic scan set of our own, checked like any real one (the plan makes its own copies too).
xraydet data synth -o "$XRAYDET_HOME/synth" --n-train 200 --n-val 50 --imgsz 256 --seed 0 --overwrite
xraydet data check "$XRAYDET_HOME/synth"
xraydet plan run cpu-demo --state-dir "$XRAYDET_HOME/plan"
xraydet plan status "$XRAYDET_HOME/plan"

# Serve the registered champion (ONNX Runtime) and send it one scan, as a client of the seed's API would.
port=${XRAYDET_DEMO_PORT:-8765}
xraydet serve --model xray-demo --port "$port" --poll-s 0 > "$XRAYDET_HOME/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$XRAYDET_HOME/serve.log"; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health"; echo
scan=$(ls "$XRAYDET_HOME"/synth/images/val/* | head -1)
curl -sf -F "file=@$scan" "http://127.0.0.1:$port/v1/detect?conf_threshold=0.1" | python -m json.tool
echo "demo finished in $(( $(date +%s) - start )) s; report: $XRAYDET_HOME/plan (xraydet plan status $XRAYDET_HOME/plan)"
