#!/usr/bin/env bash
# Fresh machine → running demo.  Extra arguments go to `archive-oa demo`
# (e.g. --keep-running, --json, --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh

python=$(python_for 3.11 || python_for 3.12 || python_for 3.13 || command -v python3)
echo "setting up .venv with $python …" >&2
make_venv "$python" .venv
exec .venv/bin/archive-oa demo "$@"
