#!/usr/bin/env bash
# Every check and every test, as CI runs them: lint, types, unit tests, then integration
# tests against real RabbitMQ and Redis (installed here if missing; started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/ensure-services.sh
export PATH="$PWD/.venv/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin"

echo "== lint" >&2
ruff check .
ruff format --check .
echo "== types" >&2
mypy
mypy tests/unit
mypy tests/integration
echo "== deployment files (hadolint, compose schema, docker-compose config)" >&2
scripts/check-deploy.sh

echo "== unit tests" >&2
pytest tests/unit -n auto -p no:cacheprovider -q
echo "== integration tests (real RabbitMQ, Redis, uvicorn, Celery workers)" >&2
pytest tests/integration -p no:cacheprovider -q
