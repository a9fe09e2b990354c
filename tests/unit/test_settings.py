from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from asyncml.settings import Settings, redact_url


def test_defaults_select_the_embedded_engine() -> None:
    settings = Settings(_env_file=None)
    assert settings.embedded_broker and settings.embedded_store
    assert settings.broker_url_value().startswith("asyncml-sqlite+sqlite:///")
    assert settings.result_ttl_s == 48 * 3600
    assert settings.fetch_max_bytes == 200_000_000
    assert settings.fetch_allow_loopback is False


def test_environment_variables_use_the_asyncml_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCML_API_PORT", "9123")
    monkeypatch.setenv("ASYNCML_BROKER_URL", "amqp://u:p@rabbit:5672//")
    settings = Settings(_env_file=None)
    assert settings.api_port == 9123
    assert settings.broker_url_value() == "amqp://u:p@rabbit:5672//"


def test_empty_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCML_BROKER_URL", "")
    assert Settings(_env_file=None).embedded_broker


def test_invalid_value_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="api_port"):
        Settings(_env_file=None, api_port=70000)


def test_result_backend_must_be_redis() -> None:
    with pytest.raises(ValidationError, match="redis"):
        Settings(_env_file=None, result_backend_url="db+sqlite:///x.db")


def test_secrets_do_not_show_in_repr() -> None:
    settings = Settings(_env_file=None, broker_url="amqp://u:hunter2@rabbit//")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("redis://:pw@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("amqp://user:pw@host//") == "amqp://user:***@host//"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_data_dir_is_where_the_embedded_files_live(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.store_path() == tmp_path / "tasks.sqlite3"
    assert str(tmp_path / "broker.sqlite3") in settings.broker_url_value()


def test_readme_lists_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`ASYNCML_{n.upper()}`" not in readme]
    assert missing == []
