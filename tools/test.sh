#!/usr/bin/env bash
# The test command: sets up what it needs, then runs the whole suite (fast and sim tiers).
# Extra arguments go to pytest, e.g. `tools/test.sh -m "not sim"` for the fast tier only.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
# The bench tier (benchmark scripts at a smoke size, a quarter of the suite's time) runs only when asked for with -m.
if printf '%s\n' "$@" | grep -qx -- '-m'; then
  exec python -m pytest "$@"
fi
exec python -m pytest -m "not bench" "$@"
