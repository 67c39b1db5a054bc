#!/usr/bin/env bash
# The test command: sets up what it needs, then runs the whole suite (fast and sim tiers).
# Extra arguments go to pytest, e.g. `tools/test.sh -m "not sim"` for the fast tier only.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
exec python -m pytest "$@"
