"""The Celery configuration the settings give (no broker is contacted)."""

from pathlib import Path

from asyncml.engine.config import celery_config
from asyncml.registry import build_registry
from asyncml.settings import Settings


def _rabbitmq(tmp_path: Path, **options: object) -> Settings:
    return Settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672//",
        result_backend_url="redis://127.0.0.1:6379/0",
        data_dir=tmp_path,
        **options,  # type: ignore[arg-type]  # test options, checked by Settings itself
    )


def test_workers_send_no_task_events_until_a_monitor_asks_by_default(tmp_path: Path) -> None:
    settings = _rabbitmq(tmp_path)
    assert celery_config(settings, build_registry(settings))["worker_send_task_events"] is False


def test_worker_task_events_true_sends_them_from_the_start(tmp_path: Path) -> None:
    settings = _rabbitmq(tmp_path, worker_task_events=True)
    assert celery_config(settings, build_registry(settings))["worker_send_task_events"] is True


def test_embedded_workers_send_no_task_events_whatever_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker_task_events=True)
    assert celery_config(settings, build_registry(settings))["worker_send_task_events"] is False
