#!/usr/bin/env bash
# The test command: the whole suite (real-data tests skip when ../shared/data is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
export YOLO_OFFLINE=true MPLBACKEND=Agg
exec python -m pytest -q --timeout=900 "$@"
