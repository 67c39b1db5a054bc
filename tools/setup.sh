#!/usr/bin/env bash
# Sets up everything on a fresh Debian bookworm machine: Debian packages, the software Vulkan driver,
# and the Python environment (.venv, from uv.lock). Idempotent; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup_system.sh
export UV_PYTHON_DOWNLOADS=never
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
PY=${PIPELINE_PYTHON:-$(command -v python3.11 || true)}
if [ -z "$PY" ] && [ -x "$HOME/.pyenv/versions/3.11.7/bin/python" ]; then PY="$HOME/.pyenv/versions/3.11.7/bin/python"; fi
[ -n "$PY" ] || { echo "Python 3.11 not found: install it or set PIPELINE_PYTHON" >&2; exit 1; }
uv sync --frozen --python "$PY" --quiet
echo "[setup] Python environment ready: .venv ($(.venv/bin/python --version))"
