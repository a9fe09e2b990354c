import asyncml


def test_public_names_are_exported_and_importable() -> None:
    assert sorted(asyncml.__all__) == sorted(
        [
            "AsyncmlError",
            "Client",
            "FetchBlocked",
            "FetchError",
            "InputInvalid",
            "Limits",
            "ServiceUnavailable",
            "Settings",
            "TaskConflict",
            "TaskContext",
            "TaskKind",
            "TaskNotFound",
            "TaskTimeout",
            "UnknownKind",
            "__version__",
            "task_kind",
        ]
    )
    for name in asyncml.__all__:
        assert getattr(asyncml, name) is not None
