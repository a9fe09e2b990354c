"""MkDocs hooks: the pages made from the code, so they cannot drift from it.

- ``reference/settings.md``: its ``<!-- settings -->`` marker becomes the table of every
  ``ASYNCML_*`` variable, read from the ``Settings`` class (a group's fields, e.g. ``euro``,
  as ``ASYNCML_<GROUP>_<NAME>``): name, type, default, description.
- ``readme.md``: the repository's README as a page, its links into ``docs/`` made relative to
  the site and its links to other repository files turned into plain text (they are not
  pages), so ``mkdocs build --strict`` checks the rest.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from asyncml.settings import Settings

ROOT = Path(__file__).parents[2]
_LINK = re.compile(r"\[([^\]]+)\]\(([^)#][^)]*)\)")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "readme.md", content=readme_page()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri == "reference/settings.md":
        return markdown.replace("<!-- settings -->", settings_table())
    return markdown


def readme_page() -> str:
    text = (ROOT / "README.md").read_text()

    def relink(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if target.startswith(("http://", "https://", "mailto:")):
            return match.group(0)
        if target.startswith("docs/"):
            return f"[{label}]({target.removeprefix('docs/')})"
        return f"{label} (`{target}` in the repository)"

    return _LINK.sub(relink, text)


def settings_table() -> str:
    rows = ["| variable | type | default | what it does |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub, sub_field in group.model_fields.items():
                rows.append(_row(f"ASYNCML_{name}_{sub}".upper(), sub_field))
        else:
            rows.append(_row(f"ASYNCML_{name}".upper(), field))
    return "\n".join(rows)


def _row(variable: str, field: FieldInfo) -> str:
    description = (field.description or "").replace("|", "\\|").replace("\n", " ")
    return f"| `{variable}` | {_type(field.annotation)} | {_default(field)} | {description} |"


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "unset"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is PydanticUndefined:
        value = field.default_factory() if field.default_factory else None  # type: ignore[call-arg]  # no validated-data factories here
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        return "(group)"
    shown = str(value).replace("|", "\\|")
    return f"`{shown}`" if shown else '`""`'
