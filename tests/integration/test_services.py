"""The service fixtures are real servers: they speak their protocols and keep data."""

from __future__ import annotations

import json
import uuid

import kombu
import pytest
import redis

from .services import RabbitMQServer, RedisServer

# Publisher confirms: once publish() returns, a persistent message is on disk.
_CONFIRMED = {"confirm_publish": True}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _publish_persistent(url: str, queue_name: str, body: str) -> None:
    queue = kombu.Queue(queue_name, routing_key=queue_name, durable=True)
    with kombu.Connection(url, transport_options=_CONFIRMED) as connection:
        producer = connection.Producer()
        producer.publish(
            body,
            routing_key=queue_name,
            declare=[queue],
            delivery_mode=kombu.Exchange.PERSISTENT_DELIVERY_MODE,
            serializer="json",
        )


def _get_one(url: str, queue_name: str) -> str | None:
    queue = kombu.Queue(queue_name, routing_key=queue_name, durable=True)
    with kombu.Connection(url) as connection:
        message = queue(connection.default_channel).get(no_ack=True)
        if message is None:
            return None
        body: str = message.decode()
        return body


def test_redis_answers_ping(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        assert client.ping() is True


def test_redis_returns_what_was_set(redis_url: str) -> None:
    key = _unique("roundtrip")
    with redis.Redis.from_url(redis_url) as client:
        client.set(key, b"value")
        assert client.get(key) == b"value"


def test_rabbitmq_returns_a_persistent_message_from_a_durable_queue(rabbitmq_url: str) -> None:
    queue_name = _unique("roundtrip")
    _publish_persistent(rabbitmq_url, queue_name, "hello")
    assert _get_one(rabbitmq_url, queue_name) == "hello"


def test_rabbitmq_listens_on_loopback_only(rabbitmq_server: RabbitMQServer) -> None:
    status = json.loads(rabbitmq_server.rabbitmqctl("status", "--formatter", "json"))
    listeners = {
        (item["protocol"], item["interface"], item["port"]) for item in status["listeners"]
    }
    assert listeners == {
        ("amqp", "127.0.0.1", rabbitmq_server.port),
        ("clustering", "127.0.0.1", rabbitmq_server.dist_port),
    }


@pytest.mark.restart
def test_redis_appendonly_data_survives_restart(private_redis_server: RedisServer) -> None:
    port = private_redis_server.port
    with private_redis_server.client() as client:
        client.set("kept", b"across restart")

    private_redis_server.restart()

    assert private_redis_server.port == port
    with private_redis_server.client() as client:
        assert client.get("kept") == b"across restart"


@pytest.mark.restart
def test_rabbitmq_persistent_message_survives_restart(
    private_rabbitmq_server: RabbitMQServer,
) -> None:
    port = private_rabbitmq_server.port
    _publish_persistent(private_rabbitmq_server.url, "kept", "across restart")

    private_rabbitmq_server.restart()

    assert private_rabbitmq_server.port == port
    assert _get_one(private_rabbitmq_server.url, "kept") == "across restart"
