#!/usr/bin/env bash
# Install the project into .venv from the lock file, installing uv first if it is missing.
# Needs only python3 (3.11+) with pip: what a fresh machine has.
#
#   scripts/bootstrap.sh         everything: the dev tools and every extra (tests, checks)
#   scripts/bootstrap.sh --run   what `make run` serves with: no dev tools, no extras (about
#                                220 MB); what is installed already is kept, not removed
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then
    uv=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
    uv=(python3 -m uv)
else
    echo "bootstrap: installing uv with pip" >&2
    python3 -m pip install --quiet "uv>=0.5,<1" ||
        python3 -m pip install --quiet --break-system-packages "uv>=0.5,<1"
    uv=(python3 -m uv)
fi

if [[ ${1:-} == --run ]]; then
    sync=(--no-dev --inexact)
else
    sync=(--all-extras)
fi
"${uv[@]}" sync --frozen --quiet "${sync[@]}"
echo "bootstrap: .venv is ready ($("${uv[@]}" --version))" >&2
