from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from asyncml.engine.config import broker_url
from asyncml.settings import Settings, redact_url


def test_defaults_select_the_embedded_engine() -> None:
    settings = Settings(_env_file=None)
    assert settings.embedded_broker and settings.embedded_store
    assert broker_url(settings).startswith("asyncml-sqlite+sqlite:///")
    assert settings.result_ttl_s == 48 * 3600
    assert settings.fetch_max_bytes == 200_000_000
    assert settings.fetch_allow_loopback is False


def test_environment_variables_use_the_asyncml_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCML_API_PORT", "9123")
    monkeypatch.setenv("ASYNCML_BROKER_URL", "amqp://u:p@rabbit:5672//")
    settings = Settings(_env_file=None)
    assert settings.api_port == 9123
    assert broker_url(settings) == "amqp://u:p@rabbit:5672//"


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
    assert str(tmp_path / "broker.sqlite3") in broker_url(settings)


def _variable_names() -> list[str]:
    """ASYNCML_<NAME> of every setting; a group's settings are ASYNCML_<GROUP>_<NAME>."""
    names = []
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names += [f"ASYNCML_{name}_{sub}".upper() for sub in group.model_fields]
        else:
            names.append(f"ASYNCML_{name.upper()}")
    return names


def test_the_configuration_page_lists_every_setting() -> None:
    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [n for n in _variable_names() if f"`{n}`" not in page]
    assert missing == []


def test_a_group_setting_keeps_its_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCML_EURO_RATE_PER_S", "2.5")
    monkeypatch.setenv("ASYNCML_EURO_RESULTS_URL", "http://results.example/{date}")
    euro = Settings(_env_file=None).euro
    assert euro.rate_per_s == 2.5
    assert euro.results_url == "http://results.example/{date}"


def test_a_group_setting_is_read_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ASYNCML_EURO_MAX_ATTEMPTS=5\nASYNCML_API_PORT=9001\n")
    settings = Settings(_env_file=env_file)
    assert settings.euro.max_attempts == 5
    assert settings.api_port == 9001


def test_an_invalid_group_setting_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCML_EURO_RESULTS_URL", "https://results.example/no-date-here")
    with pytest.raises(ValidationError, match=r"euro\.results_url"):
        Settings(_env_file=None)


def test_a_group_setting_given_by_its_old_flat_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="euro_rate_per_s: the euro settings are a group"):
        Settings(_env_file=None, euro_rate_per_s=2.0)


@pytest.mark.parametrize(
    ("cpus", "asked", "embedded", "processes"),
    [(1, 0, True, 1), (2, 0, True, 2), (16, 0, True, 2), (2, 3, True, 3), (2, 0, False, 1)],
)
def test_api_processes_default_to_two_on_the_embedded_engine_with_two_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, asked: int, embedded: bool, processes: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    backend = None if embedded else "redis://127.0.0.1:6379/0"
    settings = Settings(api_processes=asked, result_backend_url=backend)
    assert settings.api_process_count == processes
