"""The try-it form: fields generated from a kind's JSON schema, and the posted form read
back into the input's JSON (then checked by the kind's own model, as the API does).

Scalars get inputs (numbers, text, a choice for enums and booleans); anything else
(lists, objects) a JSON text area. An empty field is left out, so the model's default or
its "missing" error applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RAW_FIELD = "__json"  # a whole input as JSON, instead of the fields


@dataclass(frozen=True)
class FormField:
    name: str
    widget: str  # number, integer, text, choice, json
    label: str
    help: str
    required: bool
    choices: tuple[str, ...] = ()
    default: str = ""


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(defs.get(ref.removeprefix("#/$defs/"), {}))
    return schema


def _non_null(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The one non-null branch of ``anyOf: [X, null]`` (an optional field), else itself."""
    schema = _resolve(schema, defs)
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        merged = {**schema, **_resolve(branches[0], defs)}
        merged.pop("anyOf", None)
        return merged
    return schema


def fields(schema: dict[str, Any]) -> list[FormField]:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    found = []
    for name, raw in schema.get("properties", {}).items():
        prop = _non_null(raw, defs)
        kind = prop.get("type")
        choices: tuple[str, ...] = ()
        if "enum" in prop:
            widget, choices = "choice", tuple(json.dumps(v) for v in prop["enum"])
        elif kind == "boolean":
            widget, choices = "choice", ("true", "false")
        elif kind in ("number", "integer"):
            widget = kind
        elif kind == "string":
            widget = "text"
        else:
            widget = "json"
        default = prop.get("default", raw.get("default"))
        found.append(
            FormField(
                name=name,
                widget=widget,
                label=name,  # the API's name, as a client sends it
                help=str(prop.get("description") or ""),
                required=name in required,
                choices=choices,
                default="" if default is None else _shown(default, widget),
            )
        )
    return found


def _shown(value: Any, widget: str) -> str:
    if widget == "text" and isinstance(value, str):
        return value
    if widget == "choice":
        return json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    return json.dumps(value) if widget == "json" else str(value)


class FormInvalid(ValueError):
    """A field that cannot be read as its type (before the model checks it)."""


def read(form: dict[str, str], schema: dict[str, Any]) -> dict[str, Any]:
    """The input the form describes: the raw JSON field if given, else field by field."""
    raw = form.get(RAW_FIELD, "").strip()
    if raw:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormInvalid(f"the JSON input is not JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise FormInvalid("the JSON input must be an object")
        return value
    data: dict[str, Any] = {}
    for field in fields(schema):
        text = form.get(field.name, "").strip()
        if not text:
            continue
        try:
            if field.widget == "integer":
                data[field.name] = int(text)
            elif field.widget == "number":
                data[field.name] = float(text)
            elif field.widget == "text":
                data[field.name] = text
            else:  # choice and json: JSON literals
                data[field.name] = json.loads(text)
        except ValueError:
            raise FormInvalid(f"{field.name}: {text!r} is not a {field.widget}") from None
    return data
