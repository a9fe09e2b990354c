# The README's two commands: `make run` and `make test`.
.PHONY: install run test check unit integration format bench bench-install bench-peers bench-curves bench-backlog

install:
	scripts/bootstrap.sh

# Only what serving needs (no dev tools, no extras); `make test` installs everything.
run:
	scripts/bootstrap.sh --run
	.venv/bin/asyncml up

test:
	scripts/test.sh

check: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/mypy tests

unit: install
	.venv/bin/pytest tests/unit -n auto -q

integration: install
	scripts/ensure-services.sh
	.venv/bin/pytest tests/integration -q

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# Benchmarks (bench/README.md): real processes on loopback; never part of `make test`.
# They run in bench/.venv, the project plus the `bench` dependency group (BentoML, Ray
# Serve, matplotlib), so `make run` and `make test` never install the peers.
UV = $(shell command -v uv >/dev/null 2>&1 && echo uv || echo python3 -m uv)

bench-install: install
	UV_PROJECT_ENVIRONMENT=bench/.venv $(UV) sync --frozen --all-extras --group bench --quiet
	scripts/ensure-services.sh

# Every scenario but the peers, the curves and the backlog (about 12 minutes).
bench: bench-install
	bench/.venv/bin/python bench/run.py main

# The peers (BentoML, Ray Serve's HTTP and asynchronous paths, both our engines: about 13
# minutes) and the curves (about 4), each its own target to keep each under 15 minutes.
bench-peers: bench-install
	bench/.venv/bin/python bench/run.py peers

bench-curves: bench-install
	bench/.venv/bin/python bench/run.py curves

# The backlog at its full size: 100,000 tasks queued and drained on RabbitMQ + Redis and
# 20,000 embedded take 20-25 minutes on 2 cores, more than any 15-minute budget allows.
bench-backlog: bench-install
	bench/.venv/bin/python bench/run.py rabbitmq+redis backlog
