#!/usr/bin/env bash
# The test command: sets up what it needs, then runs the whole suite (fast and sim tiers).
# Extra arguments go to pytest, e.g. `tools/test.sh -m "not sim"` for the fast tier only.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
source tools/env.sh
# Lint and format first: seconds, and a failure names the file and line (`ruff check --fix . && ruff format .`).
ruff check .
ruff format --check .
# Two opt-in tiers run only when asked for with -m: bench (benchmark scripts at a smoke size) and tasks (every
# registered ManiSkill task planned, rendered, converted; the default tier checks each spec against its env).
if printf '%s\n' "$@" | grep -qx -- '-m'; then
  exec python -m pytest "$@"
fi
exec python -m pytest -m "not bench and not tasks" "$@"
