"""The input model of a ``model.<name>`` kind, generated from its manifest.

A request is either one row as named fields or ``instances``, a list of rows. Every value
is strict (no "1.5" for a float, no 1 for a bool) and bounded as the manifest says, so
wrong types, missing features and out-of-bound values are 422s before anything is queued.
The row fields of the top model are optional only so that ``instances`` can stand
instead of them; the validator says which form was meant and what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from asyncml.models.manifest import Feature, Manifest

_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


class InferenceOptions(BaseModel):
    """Set by the Open Inference Protocol route (/v2): the result then also holds the
    protocol's response, so a task answered later (``Prefer: respond-async``) reads as one."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="Echoed as the id.")
    outputs: list[str] | None = Field(
        default=None, max_length=8, description="Outputs to return; unset: all."
    )


def _value_type(feature: Feature) -> Any:
    """The annotation of one feature's value: strict, bounded, categorical if listed."""
    if feature.type == "string" and feature.enum is not None:
        return Literal.__getitem__(feature.enum)
    if feature.type == "string":
        return Annotated[str, Field(strict=True, max_length=feature.max_length)]
    if feature.type == "bool":
        return Annotated[bool, Field(strict=True)]
    base = float if feature.type == "float" else int
    return Annotated[base, Field(strict=True, ge=feature.min, le=feature.max)]


def _describe(feature: Feature) -> str:
    parts = [feature.description] if feature.description else []
    if feature.min is not None or feature.max is not None:
        low = "" if feature.min is None else f"{feature.min:g}"
        high = "" if feature.max is None else f"{feature.max:g}"
        parts.append(f"bounds [{low}, {high}]")
    return "; ".join(parts)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def input_model(manifest: Manifest, knows: Callable[[str], bool] | None = None) -> type[BaseModel]:
    """One row as named fields, or ``instances`` of up to ``max_rows`` rows; ``version``
    picks a version, checked with ``knows`` so an unknown one is refused before queueing."""
    prefix = f"Model{_camel(manifest.name)}"
    row_fields: dict[str, Any] = {
        f.name: (_value_type(f), Field(description=_describe(f))) for f in manifest.features
    }
    row: type[BaseModel] = create_model(f"{prefix}Row", __config__=_CONFIG, **row_fields)
    names = [f.name for f in manifest.features]

    def one_form(self: BaseModel) -> BaseModel:
        version = getattr(self, "version")  # noqa: B009  # a generated field
        if version is not None and knows is not None and not knows(version):
            raise ValueError(f"version: model {manifest.name} has no version {version!r}")
        given = [n for n in names if getattr(self, n) is not None]
        if getattr(self, "instances") is not None:  # noqa: B009  # a generated field
            if given:
                raise ValueError(
                    f"give either the features or instances, not both (got {', '.join(given)})"
                )
            return self
        missing = [n for n in names if n not in given]
        if missing:
            raise ValueError(
                f"missing features: {', '.join(missing)} (or give instances: a list of rows)"
            )
        return self

    fields: dict[str, Any] = {
        f.name: (_value_type(f) | None, Field(default=None, description=_describe(f)))
        for f in manifest.features
    }
    fields["instances"] = (
        list[row] | None,
        Field(
            default=None,
            min_length=1,
            max_length=manifest.max_rows,
            description=f"Up to {manifest.max_rows} rows, each with every feature; "
            "instead of one row given as fields.",
        ),
    )
    fields["version"] = (
        Annotated[str, Field(pattern=VERSION, max_length=64)] | None,
        Field(
            default=None,
            description="The version to ask (a numbered folder); unset: the default, or the "
            "split of the model's [traffic]. The result's version says which answered.",
        ),
    )
    fields["inference"] = (
        InferenceOptions | None,
        Field(default=None, description="Set by /v2 routes (Open Inference Protocol)."),
    )
    model: type[BaseModel] = create_model(
        f"{prefix}Input",
        __config__=_CONFIG,
        __doc__=f"One row of {', '.join(names)}, or instances: up to {manifest.max_rows} rows.",
        # pydantic takes its decorator's proxy here; the stubs ask for a plain callable
        __validators__={"one_form": model_validator(mode="after")(one_form)},  # type: ignore[dict-item]
        **fields,
    )
    return model


def rows(manifest: Manifest, inp: BaseModel) -> list[list[Any]]:
    """The rows of a parsed input, each value in manifest order."""
    names = [f.name for f in manifest.features]
    instances: list[BaseModel] | None = getattr(inp, "instances", None)
    if instances is not None:
        return [[getattr(r, n) for n in names] for r in instances]
    return [[getattr(inp, n) for n in names]]
