"""The built-in kinds: one line each in ``asyncml/tasks/__init__.py``, imported on first need."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import asyncml.tasks
from asyncml.kinds import TaskKind
from asyncml.tasks import builtin_kinds


def test_each_listed_line_gives_its_kind() -> None:
    assert [kind.name for kind in builtin_kinds()] == ["audio.length", "euro.results"]
    assert all(isinstance(kind, TaskKind) for kind in builtin_kinds())


def test_a_line_that_names_no_kind_fails_naming_the_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncml.tasks, "_KINDS", ["asyncml.tasks.euro:TIME_LIMIT_S"])
    with pytest.raises(TypeError, match=r"'asyncml\.tasks\.euro:TIME_LIMIT_S' names no TaskKind"):
        builtin_kinds()


def test_importing_the_settings_imports_no_kind() -> None:
    """settings.py imports the euro kind's settings group; the kinds import settings back."""
    program = textwrap.dedent(
        """
        import sys
        import asyncml.settings

        print(sorted(m for m in sys.modules if m.startswith("asyncml.tasks")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['asyncml.tasks', 'asyncml.tasks._euro_settings']"
