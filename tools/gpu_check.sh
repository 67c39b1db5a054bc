#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): GPU rendering against lavapipe, lora at production size from a random base
# checkpoint, batched closed-loop evaluation; figures as JSON. Needs a GPU that JAX sees; refuses otherwise.
#   tools/gpu_check.sh                        # on a GPU host with this checkout (runs tools/setup.sh first)
#   docker compose exec worker-gpu tools/gpu_check.sh --out /tmp/gpu_check.json   # on the GPU worker
#   tools/gpu_check.sh --cpu-dry-run          # the same code at the tiny size on a CPU (what the suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  tools/setup.sh  # a checkout without its environment (the image has one at /opt/pipeline/.venv)
fi
source tools/env.sh
exec python -m bench.gpu_check "$@"
