"""A path that needs a missing extra says which and how to install it (issue 20, point 1).

The extras are installed here (``make test`` installs every one), so each test blocks the
import the way a default install lacks it: ``sys.modules[name] = None`` makes ``import name``
raise ModuleNotFoundError, as a missing package does.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from asyncml.cli import app
from asyncml.errors import ExtraMissing
from asyncml.extras import import_extra
from asyncml.models import ModelInvalid, ModelSpec, load_model, read_manifest
from asyncml.tasks._probe import probe_audio

ROOT = Path(__file__).parents[2]


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_audio_no_decoder_reads_fails_naming_the_decode_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise = np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.bin"
    path.write_bytes(b"\x00" + noise)  # binary, no signature: only a decoder could tell
    _block(monkeypatch, "librosa")
    with pytest.raises(ExtraMissing) as caught:
        probe_audio(path)
    assert "pip install 'async-ml-inference[decode]'" in caught.value.message
    assert caught.value.to_body()["type"] == "extra_missing"


def test_a_skops_model_without_the_sklearn_extra_is_invalid_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "lr"
    folder.mkdir()
    features = "".join(f'\n[[features]]\nname = "{f}"\ntype = "float"\n' for f in "abcd")
    (folder / "model.toml").write_text(
        f'name = "lr"\nversion = "1"\nformat = "skops"\nartifact = "model.skops"\n{features}'
    )
    (folder / "model.skops").write_bytes(b"PK")
    _block(monkeypatch, "skops", "skops.io")
    with pytest.raises(ModelInvalid, match=r"pip install 'async-ml-inference\[sklearn\]'"):
        load_model(ModelSpec(folder=folder, manifest=read_manifest(folder)))


def test_flower_without_its_extra_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "flower")
    done = CliRunner().invoke(app, ["flower"], env={"COLUMNS": "200"})
    assert done.exit_code == 2, done.output
    assert "async-ml-inference[flower]" in done.output


def test_a_module_of_the_extra_missing_something_else_is_not_taken_for_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The extra is installed but broken (it imports something absent): not "install it".
    (tmp_path / "asyncml_fake_extra.py").write_text("import asyncml_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="asyncml_no_such_dependency"):
        import_extra("asyncml_fake_extra", "decode", "a test")


def test_the_default_install_holds_none_of_the_heavy_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    default = " ".join(project["dependencies"])
    for heavy in ("librosa", "scikit-learn", "skops", "flower"):
        assert heavy not in default, heavy
    assert set(project["optional-dependencies"]) >= {"decode", "sklearn", "flower"}
