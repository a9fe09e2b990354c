"""The error mapping: each ``type`` names one class, the framework's or a kind's own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
import pytest

from asyncml.client import _error_from
from asyncml.errors import AsyncmlError, FetchBlocked, InputInvalid, error_class_for
from asyncml.models.errors import ModelInvalid
from asyncml.tasks._audio_errors import AudioNotAudio
from asyncml.tasks.euro import EuroDrawNotFound, EuroPageChanged


def test_framework_types_map_back_to_their_classes() -> None:
    assert error_class_for("input_invalid") is InputInvalid
    assert error_class_for("blocked_destination") is FetchBlocked


def test_kind_types_map_back_to_the_classes_in_the_kinds_modules() -> None:
    assert error_class_for("audio_not_audio") is AudioNotAudio
    assert error_class_for("euro_draw_not_found") is EuroDrawNotFound
    assert error_class_for("euro_page_changed") is EuroPageChanged
    assert error_class_for("model_invalid") is ModelInvalid


def test_an_unknown_type_maps_to_the_base_class() -> None:
    assert error_class_for("no_such_type") is AsyncmlError


def test_the_central_tree_holds_no_kind_errors() -> None:
    import asyncml.errors

    defined = [
        cls
        for cls in vars(asyncml.errors).values()
        if isinstance(cls, type) and issubclass(cls, AsyncmlError)
    ]
    assert {cls.__module__ for cls in defined} == {"asyncml.errors"}
    assert not any(cls.type.startswith(("audio_", "euro_", "model_")) for cls in defined)


def test_a_second_class_claiming_a_taken_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"'euro_page_changed' is already .*EuroPageChanged"):

        class Clash(AsyncmlError):
            type = "euro_page_changed"

    assert error_class_for("euro_page_changed") is EuroPageChanged


def test_a_subclass_that_keeps_its_parents_type_leaves_the_mapping_alone() -> None:
    class Narrower(InputInvalid):
        pass

    assert error_class_for("input_invalid") is InputInvalid


def test_the_sdk_raises_a_kinds_class_for_its_type_in_a_fresh_process() -> None:
    """In a program that imported only the SDK, a kind's type still maps to its class."""
    program = textwrap.dedent(
        """
        import sys
        import httpx
        from asyncml.client import _error_from

        assert "asyncml.tasks.euro" not in sys.modules, "the kinds were imported already"
        body = {"type": "euro_draw_not_found", "message": "no draw"}
        error = _error_from(httpx.Response(404, json=body))
        print(type(error).__module__, type(error).__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["asyncml.tasks._euro_errors", "EuroDrawNotFound"]


def test_the_sdk_raises_the_class_of_the_body_type() -> None:
    body = {"type": "audio_not_audio", "message": "not audio"}
    error = _error_from(httpx.Response(422, json=body))
    assert isinstance(error, AudioNotAudio)
    assert error.message == "not audio"
