"""Integration tests: real RabbitMQ, Redis, worker processes and HTTP servers on loopback."""
