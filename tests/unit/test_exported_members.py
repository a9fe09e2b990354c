import asyncml


def test_public_names_are_exported_and_importable() -> None:
    assert sorted(asyncml.__all__) == sorted(
        [
            "AsyncClient",
            "AsyncmlError",
            "Client",
            "FetchBlocked",
            "FetchError",
            "InputInvalid",
            "Limits",
            "RateLimited",
            "ServiceUnavailable",
            "Settings",
            "TaskConflict",
            "Task",
            "TaskContext",
            "TaskFailed",
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
