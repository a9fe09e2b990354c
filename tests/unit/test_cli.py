"""The CLI through typer's runner: options, exit codes and JSON output, no server needed."""

from __future__ import annotations

import json
import re
import socket
from datetime import date

import typer.core
import typer.main
from typer.testing import CliRunner

from asyncml.cli import app
from asyncml.cli.demo import _sample_numbers, recent_draw_dates

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _listed_commands(help_text: str) -> list[str]:
    """The names in the Commands section of ``--help``, one per row.

    A row starts with its name (``│ name   text``, or ``  name   text`` without rich); a
    wrapped description starts with blanks. Matching names anywhere in the text would find
    ``up`` in "supervised" and ``worker`` in "a worker", whether or not they are listed.
    """
    _, found, section = help_text.partition("Commands")
    assert found, help_text
    return re.findall(r"^(?:│ |  )([a-z][\w-]*)\s", section, re.MULTILINE)


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    registered = list(group.commands)
    assert sorted(_listed_commands(result.output)) == sorted(registered)
    documented = {"up", "api", "worker", "submit", "status", "wait", "cancel", "kinds", "demo"}
    assert documented <= set(registered)


def test_each_kind_is_a_submit_command_with_its_fields() -> None:
    result = runner.invoke(app, ["submit", "euro.results", "--help"])
    assert result.exit_code == 0
    assert "--draw-date" in result.output


def test_missing_required_field_is_a_usage_error() -> None:
    assert runner.invoke(app, ["submit", "audio.length"]).exit_code == 2


def test_unreachable_service_exits_3_with_a_json_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["status", "some-id", "--url", url, "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["type"] == "service_unavailable"


def test_webhook_secret_prints_a_whsec_value() -> None:
    result = runner.invoke(app, ["webhook-secret"])
    assert result.exit_code == 0
    assert result.output.strip().startswith("whsec_")


def test_demo_with_nothing_to_submit_is_a_usage_error() -> None:
    assert runner.invoke(app, ["demo", "--no-euro"]).exit_code == 2


def test_recent_draw_dates_are_the_tuesdays_and_fridays_before_today() -> None:
    days = recent_draw_dates(date(2026, 11, 25))  # a Wednesday
    assert days == [
        date(2026, 11, 13),
        date(2026, 11, 17),
        date(2026, 11, 20),
        date(2026, 11, 24),
    ]


def test_sample_numbers_are_valid_draws() -> None:
    for day in recent_draw_dates(date(2026, 11, 25), days=60):
        numbers, stars = _sample_numbers(day)
        assert len(set(numbers)) == 5 and all(1 <= n <= 50 for n in numbers)
        assert len(set(stars)) == 2 and all(1 <= s <= 12 for s in stars)
