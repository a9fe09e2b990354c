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
mypy tests
echo "== deployment files (hadolint, compose schema, docker-compose config)" >&2
scripts/check-deploy.sh
echo "== documentation site (mkdocs build --strict: a broken link or anchor fails)" >&2
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

# `pytest` from the root runs the same tests; CI splits them only to run the unit tests in
# parallel. pytest exits 5 when it ran no test: here that means a folder lost its tests (or a
# collection filter went wrong), so it fails the build with a message rather than passing quietly.
run_pytest() {
  local status=0
  pytest -p no:cacheprovider -q "$@" || status=$?
  if [ "$status" -eq 5 ]; then
    echo "pytest $*: no test ran (exit 5); expected some" >&2
  fi
  return "$status"
}
echo "== unit tests" >&2
run_pytest tests/unit -n auto
echo "== integration tests (real RabbitMQ, Redis, uvicorn, Celery workers), serially" >&2
# Everything outside tests/unit, so that no test collected by a plain `pytest` is skipped here.
run_pytest tests --ignore=tests/unit
