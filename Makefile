# The README's two commands: `make run` and `make test`.
.PHONY: install run test check unit integration format bench bench-install bench-peers

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

# Benchmarks (bench/README.md): real processes on loopback, about 8 minutes; never part of `make test`.
bench: install
	.venv/bin/python bench/run.py
