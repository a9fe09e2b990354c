"""The installed distribution's version, read in one place (pyproject.toml sets it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("async-ml-inference")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
