from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from asyncml.api import create_app
from asyncml.engine import make_celery
from asyncml.errors import UnknownKind
from asyncml.kinds import Limits, TaskContext, TaskKind, task_kind
from asyncml.registry import Registry, build_registry, default_registry
from asyncml.settings import Settings


class EchoIn(BaseModel):
    text: str


class EchoOut(BaseModel):
    text: str


def echo(inp: EchoIn, ctx: TaskContext) -> EchoOut:
    return EchoOut(text=inp.text)


def test_declaration_reads_models_from_annotations() -> None:
    kind = task_kind("debug.echo", queue="debug")(echo)
    assert kind.input_model is EchoIn
    assert kind.output_model is EchoOut
    assert kind.family == "debug"


def test_kinds_fail_given_undotted_names() -> None:
    with pytest.raises(ValueError, match="dotted lowercase"):
        task_kind("Echo", queue="debug")(echo)


def test_kinds_fail_given_invalid_queue_names() -> None:
    with pytest.raises(ValueError, match="queue name"):
        task_kind("debug.echo", queue="Bad Queue")(echo)


def test_kinds_fail_without_model_annotations() -> None:
    def untyped(inp, ctx):
        return inp

    with pytest.raises(TypeError, match="annotate"):
        task_kind("debug.untyped", queue="debug")(untyped)


def test_registry_refuses_a_second_kind_under_the_same_name() -> None:
    kind = task_kind("debug.echo", queue="debug")(echo)
    registry = Registry([kind])
    with pytest.raises(ValueError, match="already registered"):
        registry.add(kind)


def test_unknown_kind_error_lists_known_kinds() -> None:
    with pytest.raises(UnknownKind, match=r"audio\.length"):
        default_registry().get("nope.nothing")


def test_run_validates_payload_and_dumps_output_as_json_data(settings: Settings) -> None:
    kind = task_kind("debug.echo", queue="debug")(echo)
    assert kind.run({"text": "hi"}, TaskContext(settings)) == {"text": "hi"}


def test_new_kind_gets_route_schema_and_celery_task(settings: Settings) -> None:
    kind: TaskKind[EchoIn, EchoOut] = task_kind(
        "debug.echo", queue="debug", limits=Limits(timeout_s=5)
    )(echo)
    registry = Registry([*default_registry(), kind])
    with TestClient(create_app(settings, registry)) as client:
        spec = client.get("/openapi.json").json()
        assert "/v1/tasks/debug.echo" in spec["paths"]
        accepted = client.post("/v1/tasks/debug.echo", json={"text": "hi"})
        assert accepted.status_code == 202
        assert client.post("/v1/tasks/debug.echo", json={}).status_code == 422
        assert "debug.echo" in {k["name"] for k in client.get("/v1/kinds").json()}
    celery = make_celery(settings, registry)
    task = celery.tasks["debug.echo"]
    assert task.acks_late and task.reject_on_worker_lost
    assert task.soft_time_limit == 5
    assert {q.name for q in celery.conf.task_queues} == {
        *default_registry().queues,
        "debug",
        "webhooks",
    }


def test_engine_is_configured_for_reliability(settings: Settings) -> None:
    conf = make_celery(settings, default_registry()).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 8  # embedded: polled, see EMBEDDED_PREFETCH
    assert conf.result_expires == 48 * 3600
    assert all(q.durable for q in conf.task_queues)


def test_production_broker_uses_publisher_confirms(settings: Settings) -> None:
    prod = Settings(_env_file=None, data_dir=settings.data_dir, broker_url="amqp://g:g@127.0.0.1//")
    conf = make_celery(prod, default_registry()).conf
    assert conf.broker_transport_options["confirm_publish"] is True
    assert conf.broker_url.startswith("amqp://")
    assert conf.worker_prefetch_multiplier == 1  # a message waits for a free worker


def test_debug_echo_is_served_only_when_enabled(tmp_path: Path) -> None:
    off = Settings(_env_file=None, data_dir=tmp_path / "off")
    on = Settings(_env_file=None, data_dir=tmp_path / "on", debug_kinds=True)
    assert "debug.echo" not in build_registry(off)
    with TestClient(create_app(off)) as client:
        assert client.post("/v1/tasks/debug.echo", json={"payload": 1}).status_code == 404
    kind = build_registry(on).get("debug.echo")
    assert kind.queue == "debug"
    assert kind.run({"payload": {"a": [1, 2]}}, TaskContext(on)) == {"payload": {"a": [1, 2]}}
    with TestClient(create_app(on)) as client:
        assert client.post("/v1/tasks/debug.echo", json={"payload": 1}).status_code == 202
