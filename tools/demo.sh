#!/usr/bin/env bash
# The demo: sets up what it needs, then runs the data stages of the pipeline for PickCube-v1 on the
# embedded defaults (offline motion-planning demos, CPU rendering, local artifact store).
# Extra arguments go to `python -m tasks.pipeline`, e.g. `tools/demo.sh --env-id PushCube-v1 --count 8`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
exec python -m tasks.pipeline "$@"
