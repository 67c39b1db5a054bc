#!/usr/bin/env bash
# The demo: sets up what it needs, then runs the whole pipeline (download -> render -> convert -> stats
# -> train -> verify -> promote) for PickCube-v1 through Airflow in-process (dag.test, SQLite), on the
# embedded defaults: offline motion-planning demos, CPU rendering, the tiny pi0 preset, ./artifacts.
# Extra arguments go to tools/demo_run.py, e.g. `tools/demo.sh --env-id PushCube-v1 --conf demo_count=8`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
exec python tools/demo_run.py "$@"
