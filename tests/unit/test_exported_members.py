from types import ModuleType

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
    unbound = [name for name in asyncml.__all__ if not hasattr(asyncml, name)]
    assert unbound == [], "named in __all__ but not importable from asyncml"
    homes = {name: getattr(getattr(asyncml, name), "__module__", None) for name in asyncml.__all__}
    del homes["__version__"]
    foreign = {name: home for name, home in homes.items() if not str(home).startswith("asyncml.")}
    assert foreign == {}, "each export is a class or function of asyncml's own"
    assert isinstance(asyncml.__version__, str) and asyncml.__version__


def test_every_public_name_of_the_package_is_in_all() -> None:
    """A public name bound in ``asyncml/__init__.py`` but left out of ``__all__`` is an export
    nobody decided on; submodules (bound as attributes once imported) do not count."""
    public = {
        name
        for name, value in vars(asyncml).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert sorted(public) == sorted(set(asyncml.__all__) - {"__version__"})
