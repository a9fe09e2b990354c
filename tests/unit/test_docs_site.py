"""The documentation site's generated pages (docs/_hooks/generated.py) come from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from asyncml.settings import Settings

ROOT = Path(__file__).parents[2]


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs/_hooks/generated.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_reference_has_a_row_for_every_variable() -> None:
    table = _hooks().settings_table()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names = [f"ASYNCML_{name}_{sub}".upper() for sub in group.model_fields]
        else:
            names = [f"ASYNCML_{name}".upper()]
        for variable in names:
            assert f"| `{variable}` |" in table, variable


def test_settings_reference_shows_defaults_and_choices() -> None:
    table = _hooks().settings_table()
    assert "| `ASYNCML_API_PORT` | int | `8000` |" in table
    assert "`auto` \\| `on` \\| `off`" in table


def test_readme_page_keeps_pages_links_and_flattens_repository_files() -> None:
    page = _hooks().readme_page()
    assert "](img/dashboard-overview.png)" in page
    assert "](bench/README.md)" not in page
