"""What ``asyncml watch`` and ``submit --wait`` show, from a task's events: the rendering
alone (the commands against a real stack are in tests/integration/test_sdk_events.py)."""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from asyncml.cli import app, tasks
from asyncml.cli.tasks import WatchView, watch_task
from asyncml.client import Task
from asyncml.records import TaskEvent, TaskStatus

AT = datetime(2026, 3, 2, 9, 30, 5, tzinfo=UTC)


def event(kind: Any, **data: Any) -> TaskEvent:
    return TaskEvent(id="1", task_id="t1", type=kind, at=AT, data=data)


def local(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")


STEPS = [
    event("queued", position=1, ahead=2, eta_s=None),
    event("queued", position=0, ahead=1, eta_s=2.5),
    event("started", worker="w1@host", attempt=1),
    event("progress", done=1, total=2, message="step 1"),
    event("log", level="info", message="finished step 1 of 2"),
    event("output", partial={"step": 1}),
    event("progress", done=2, total=2, message="step 2"),
    event("log", level="warning", message="slow [disk]"),
]


def test_a_queued_task_headline_says_its_position_and_eta() -> None:
    view = WatchView("t1", live=True)
    view.apply(STEPS[0])
    assert view.headline() == "queued: position 1, 2 ahead, ETA unknown yet"
    view.apply(STEPS[1])
    assert view.headline() == "queued: position 0, 1 ahead, ETA 2.5 s"


def test_a_running_task_headline_says_its_steps() -> None:
    view = WatchView("t1", live=True)
    for one in STEPS[:4]:
        view.apply(one)
    assert view.headline() == "running 1/2 step 1"
    view.apply(event("progress", done=7, total=None, message=None))
    assert view.headline() == "running 7"


def test_live_view_prints_the_start_and_log_lines_only() -> None:
    view = WatchView("t1", live=True)
    printed = [line for one in STEPS for line in view.apply(one)]
    at = local(AT)
    assert printed == [
        f"{at} started on w1@host, attempt 1",
        f"{at} [dim]info   [/dim] finished step 1 of 2",
        f"{at} [yellow]warning[/yellow] slow \\[disk]",  # markup in a message is escaped
    ]


def test_plain_view_prints_every_change_as_a_line() -> None:
    view = WatchView("t1", live=False)
    printed = [line for one in STEPS for line in view.apply(one)]
    at = local(AT)
    assert printed[:4] == [
        f"{at} queued: position 1, 2 ahead, ETA unknown yet",
        f"{at} queued: position 0, 1 ahead, ETA 2.5 s",
        f"{at} started on w1@host, attempt 1",
        f"{at} progress 1/2 step 1",
    ]
    assert f'{at} output {{"step":1}}' in printed
    assert view.apply(event("completed", task=None)) == []


class Replays:
    """Stands in for a ``Client``: replays events to ``wait(on_event=...)`` (the SDK's own
    stream reading is tested against the real app in test_client_events.py)."""

    def __init__(self, events: list[TaskEvent], final: Task) -> None:
        self.events = events
        self.final = final

    def wait(self, task_id: str, timeout: float | None = None, on_event: Any = None) -> Task:
        for one in self.events:
            on_event(one)
        return self.final


def rendered(monkeypatch: pytest.MonkeyPatch, *, terminal: bool) -> str:
    out = io.StringIO()
    screen = Console(file=out, force_terminal=terminal, width=100, color_system=None)
    monkeypatch.setattr(tasks, "console", screen)
    final = Task(id="t1", kind="debug.steps", status=TaskStatus.SUCCESS, submitted_at=AT)
    client: Any = Replays(STEPS, final)
    assert watch_task(client, "t1", None) is final
    return out.getvalue()


def test_watch_on_a_terminal_draws_a_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = rendered(monkeypatch, terminal=True)
    assert "running 2/2 step 2" in screen  # the bar's last state stays
    assert "finished step 1 of 2" in screen
    assert "queued: position 0" in screen  # drawn while it was queued


def test_watch_elsewhere_prints_lines_without_redrawing(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = rendered(monkeypatch, terminal=False)
    assert "\r" not in screen and "\x1b" not in screen
    assert "progress 2/2 step 2" in screen


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_watch_of_an_unreachable_service_exits_3_with_a_json_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(app, ["watch", "some-id", "--url", url, "--json"])
    assert result.exit_code == 3
    assert json.loads(result.stdout)["type"] == "service_unavailable"


def test_watch_is_a_command_with_the_wait_options() -> None:
    result = CliRunner().invoke(app, ["watch", "--help"])
    assert result.exit_code == 0
    for option in ("--timeout", "--json", "--url", "--api-key"):
        assert option in result.output
