"""`asyncml keys`: create shows a key once and stores only its digest; list, revoke, and the
keys-file line an operator provisions from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asyncml.auth import digest, parse_key_file
from asyncml.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"ASYNCML_DATA_DIR": str(tmp_path / "data")}


def test_create_list_revoke(env: dict[str, str]) -> None:
    created = runner.invoke(
        app, ["keys", "create", "alice", "--rate", "5/second", "--json"], env=env
    )
    assert created.exit_code == 0, created.output
    made = json.loads(created.stdout)
    assert made["key"].startswith("aml_") and made["digest"] == digest(made["key"])

    listed = runner.invoke(app, ["keys", "list", "--json"], env=env)
    (entry,) = json.loads(listed.stdout)
    assert (entry["name"], entry["rate"], entry["digest"]) == ("alice", "5/second", made["digest"])
    assert made["key"] not in listed.stdout

    again = runner.invoke(app, ["keys", "create", "alice"], env=env)
    assert again.exit_code == 2  # a name is taken once

    assert runner.invoke(app, ["keys", "revoke", "alice"], env=env).exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout) == []
    assert runner.invoke(app, ["keys", "revoke", "alice"], env=env).exit_code == 2


def test_file_line_stores_nothing_and_parses_back(env: dict[str, str]) -> None:
    result = runner.invoke(
        app, ["keys", "create", "ci", "--file-line", "--max-unfinished", "9", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    (parsed,) = parse_key_file([made["file_line"]])
    assert (parsed.name, parsed.digest, parsed.max_unfinished) == ("ci", digest(made["key"]), 9)
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout) == []


def test_bad_rate_is_a_usage_error(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["keys", "create", "bob", "--rate", "lots"], env=env)
    assert result.exit_code == 2
