"""What each ASYNCML_STORE_DURABILITY mode does with a store's report (no server needed:
the reports are built here; tests/integration/test_store_durability.py reads real ones)."""

from __future__ import annotations

import logging

import pytest

from asyncml.store import DurabilityMode, StoreDurability, log_durability, refuses_readiness

NOT_DURABLE = StoreDurability(
    store="redis", durable=False, settings={"appendonly": "no"}, risk="lost.", fix="turn it on"
)
UNKNOWN = StoreDurability(store="redis", durable=None, settings={}, risk="unknown.", fix="ask")
DURABLE = StoreDurability(store="sqlite", durable=True, settings={}, risk="nothing.")


@pytest.mark.parametrize(
    ("report", "mode", "refused"),
    [
        (NOT_DURABLE, "check", True),
        (NOT_DURABLE, "warn", False),
        (NOT_DURABLE, "off", False),
        (UNKNOWN, "check", False),
        (DURABLE, "check", False),
    ],
)
def test_only_check_refuses_readiness_and_only_for_a_store_known_not_durable(
    report: StoreDurability, mode: DurabilityMode, refused: bool
) -> None:
    assert refuses_readiness(report, mode) is refused


@pytest.mark.parametrize(
    ("report", "mode", "level"),
    [
        (NOT_DURABLE, "check", logging.ERROR),
        (NOT_DURABLE, "warn", logging.WARNING),
        (UNKNOWN, "check", logging.WARNING),
    ],
)
def test_start_up_line_is_as_loud_as_the_mode_says(
    report: StoreDurability, mode: DurabilityMode, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.durability")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        log_durability(report, mode, log)
    [record] = caplog.records
    assert record.levelno == level
    assert report.fix is not None and report.fix in record.getMessage()


@pytest.mark.parametrize(("report", "mode"), [(NOT_DURABLE, "off"), (DURABLE, "check")])
def test_nothing_is_logged_when_off_or_durable(
    report: StoreDurability, mode: DurabilityMode, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.durability")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        log_durability(report, mode, log)
    assert caplog.records == []
