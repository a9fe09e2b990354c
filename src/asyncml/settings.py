"""The one settings object; the only module that reads the environment.

Build it once at the edge (CLI callback, app factory, worker bootstrap) and pass it down.

Over 350 lines by design: one settings object, every setting with its description (the
settings reference is generated from it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from asyncml.tasks._euro_settings import EuroSettings

HOURS = 3600


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; any other host (0.0.0.0, a name, an address) is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """Drop the password from a URL so it can be logged or shown in an error body."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Settings(BaseSettings):
    """Every knob of the service, read from ``ASYNCML_*`` variables (or a ``.env`` file)."""

    # A settings group (a field holding a model, e.g. ``euro``) reads ASYNCML_<GROUP>_<NAME>:
    # the name is split at its first "_" after the prefix only, so the variables of the
    # group's settings keep the names they had as top-level fields (ASYNCML_EURO_RATE_PER_S).
    model_config = SettingsConfigDict(
        env_prefix="ASYNCML_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    broker_url: SecretStr | None = Field(
        default=None,
        description="Celery broker, e.g. amqp://user:pass@host:5672//. "
        "Unset: the embedded SQLite broker under data_dir.",
    )
    result_backend_url: SecretStr | None = Field(
        default=None,
        description="Task record store, e.g. redis://:pass@host:6379/0. "
        "Unset: the embedded SQLite store under data_dir.",
    )
    data_dir: Path = Field(
        default=Path(".asyncml"),
        description="Folder of the embedded broker and store (created on demand).",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port the API listens on.")
    api_max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest request body accepted (413 above)."
    )
    result_ttl_s: int = Field(
        default=48 * HOURS, gt=0, description="Seconds a finished task's record is kept."
    )
    store_durability: Literal["check", "warn", "off"] = Field(
        default="check",
        description="A task store that may lose accepted tasks in a crash (Redis without "
        "appendonly yes): check = log an error and /readyz answers 503; warn = log a "
        "warning, stay ready; off = do not look.",
    )
    # --- API keys, limits and back-pressure -------------------------------------------
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="API keys: on, off, or auto (required unless the API listens on loopback).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of provisioned keys, one `name sha256-hex [rate] [max_unfinished]` "
        "a line (asyncml keys hash makes the line); used with the keys in the store.",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="If set, /metrics asks for Authorization: Bearer <token>."
    )
    rate_limit: str = Field(
        default="50/second",
        description="Requests allowed per API key, in the `limits` notation (e.g. 50/second, "
        "1000/minute); a key's own rate overrides it; empty: no limit.",
    )
    max_unfinished_per_key: int = Field(
        default=1000,
        ge=0,
        description="Queued or running tasks one API key may have (429 above); 0: no cap.",
    )
    max_queue_depth: int = Field(
        default=10_000,
        ge=0,
        description="Messages a queue may hold before submissions to it get 503; 0: no cap.",
    )
    max_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="Inputs one batch submission may carry."
    )
    api_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Time a client has to send a request's headers (slow clients are cut).",
    )
    api_keepalive_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Idle keep-alive connections are closed after this. Longer than common "
        "clients' own expiry (httpx, and so the SDK: 5 s), so a client drops an idle "
        "connection before the server closes it, never sending on one being closed.",
    )
    api_max_connections: int = Field(
        default=1000, ge=1, description="Concurrent connections per API process (503 above)."
    )
    api_max_connections_per_client: int = Field(
        default=100,
        ge=0,
        description="Concurrent connections one client address (an IPv6 client's /64) may "
        "hold per API process (503 above), so one address cannot take every slot; 0: no cap "
        "(behind a reverse proxy, whose address every client shares).",
    )
    api_processes: int = Field(
        default=0,
        ge=0,
        le=64,
        description="API processes asyncml api and asyncml up run (uvicorn workers on one "
        "port); 0: two on the embedded engine with two CPUs or more, else one.",
    )
    worker_concurrency: int = Field(
        default=0, ge=0, description="Worker processes per worker; 0 means one per CPU."
    )
    worker_task_events: bool = Field(
        default=False,
        description="Workers on RabbitMQ send Celery's task events (three messages a task) "
        "from their start; off, they send them once a monitor asks (asyncml flower does, "
        "as it starts).",
    )
    embedded_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=5,
        description="How long an idle embedded worker waits for a publisher's wake-up before "
        "it looks at SQLite anyway (the fallback for a missed wake-up).",
    )
    embedded_sweep_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often `asyncml up` deletes the embedded broker's fetched messages "
        "of finished tasks (the stock transport never deletes a message).",
    )
    publish_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Time one submission may spend reaching the broker before the API answers 503.",
    )
    fetch_max_bytes: int = Field(
        default=200_000_000, gt=0, description="Largest download accepted, in bytes."
    )
    fetch_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect timeout of outbound fetches."
    )
    fetch_read_timeout_s: float = Field(
        default=30.0, gt=0, description="Read timeout (between bytes) of outbound fetches."
    )
    fetch_total_timeout_s: float = Field(
        default=120.0, gt=0, description="Wall-clock cap of one whole download."
    )
    fetch_max_redirects: int = Field(
        default=5, ge=0, description="Redirects followed, each hop checked by the SSRF guard."
    )
    fetch_allow_loopback: bool = Field(
        default=False, description="Allow fetches from 127.0.0.0/8 and ::1 (tests, demo)."
    )
    fetch_allow_private: bool = Field(
        default=False,
        description="Allow fetches from private, link-local and other non-public addresses.",
    )
    scraper_contact: str = Field(
        default="",
        max_length=200,
        description="URL or e-mail address put in the User-Agent of scraping tasks "
        "(euro.results), so a site can reach whoever runs them.",
    )
    # --- the euro.results kind: its own group, declared with the kind ------------------
    euro: EuroSettings = Field(
        default_factory=EuroSettings,
        description="The euro.results kind's settings, ASYNCML_EURO_<NAME> "
        "(e.g. ASYNCML_EURO_RATE_PER_S); see EuroSettings.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks signing secret (whsec_...; make one with "
        "`asyncml webhook-secret`). Unset: callbacks are refused with 422.",
    )
    default_callback_url: HttpUrl | None = Field(
        default=None,
        description='Where the classic routes\' "callback": true delivers. Unset: the flag '
        "is accepted and logged.",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=20, description="Delivery attempts of one webhook before it fails."
    )
    webhook_retry_base_s: float = Field(
        default=30.0,
        gt=0,
        description="First retry delay; each next one doubles (8 attempts span about 1 h).",
    )
    webhook_retry_max_s: float = Field(
        default=600.0,
        gt=0,
        le=1500,
        description="Longest wait between two attempts (kept under RabbitMQ's 30 min "
        "consumer timeout: a retry waits, unacknowledged, in a worker).",
    )
    webhook_allow_loopback: bool = Field(
        default=False, description="Allow callbacks to 127.0.0.0/8 and ::1 (tests, demos)."
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow callbacks to private and other non-public addresses."
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Time one webhook delivery attempt may take."
    )
    # --- model serving (asyncml.models) --------------------------------------------------
    models_dir: Path | None = Field(
        default=None,
        description="Folder of model sub-folders (model.toml + artifact), each served as "
        "model.<name>. Unset: models/ under data_dir.",
    )
    models_bundled: bool = Field(
        default=True, description="Also serve the example models shipped in the package."
    )
    models_preload: bool = Field(
        default=False,
        description="Load a worker's models when each worker process starts, not at its "
        "first task.",
    )
    models_trust_pickle_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders whose pickle/joblib artifacts may be loaded (a JSON list). "
        "Unpickling runs any code the file holds: list only folders you control.",
    )
    models_intra_op_threads: int = Field(
        default=1, ge=1, le=64, description="Threads one ONNX Runtime session may use."
    )
    models_batching: bool = Field(
        default=True,
        description="Run predictions of one model that arrive together as one batch (in "
        "workers of model queues, which use a pool of threads).",
    )
    models_worker_threads: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Tasks one worker of model queues holds at once (its thread pool); "
        "the most a batch can gather.",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a worker's own Prometheus exporter; 0: none (under asyncml up "
        "the API's /metrics shows the workers' series).",
    )
    debug_kinds: bool = Field(
        default=False,
        description="Serve the benchmarks' kinds: debug.echo (returns its input, the "
        "platform's own cost per task) and debug.audio_decode (download and decode a whole "
        "audio file with librosa, the naive baseline of audio.length).",
    )
    ui: bool = Field(
        default=True, description="Serve the dashboard at /ui (false: no /ui routes at all)."
    )
    ui_secret: SecretStr | None = Field(
        default=None,
        description="Signs the dashboard's session cookies; unset: a random secret kept in "
        "the task store, shared by every API process using it.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json for one JSON object a line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the API and the workers."
    )

    @model_validator(mode="before")
    @classmethod
    def _group_settings_are_not_flat(cls, data: object) -> object:
        """``euro_rate_per_s=`` was a field of its own; ignoring it quietly (extra="ignore")
        would run with the default, so name the group to use instead."""
        if isinstance(data, dict):
            flat = sorted(k for k in data if isinstance(k, str) and k.startswith("euro_"))
            if flat:
                raise ValueError(
                    f"{', '.join(flat)}: the euro settings are a group, "
                    "e.g. Settings(euro={'rate_per_s': 2.0})"
                )
        return data

    @field_validator("broker_url", "result_backend_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("rate_limit")
    @classmethod
    def _rate_notation(cls, value: str) -> str:
        if value:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"not a rate in the limits notation: {value!r}") from exc
        return value

    @field_validator("result_backend_url")
    @classmethod
    def _redis_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("the result backend must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            import base64

            raw = value.get_secret_value()
            try:
                key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except ValueError:
                key = b""
            if not raw.startswith("whsec_") or len(key) < 24:
                raise ValueError("the webhook secret must be whsec_ and base64 of 24+ bytes")
        return value

    @model_validator(mode="after")
    def _default_callback_needs_a_secret(self) -> Settings:
        if self.default_callback_url is not None and self.webhook_secret is None:
            raise ValueError("ASYNCML_DEFAULT_CALLBACK_URL needs ASYNCML_WEBHOOK_SECRET")
        return self

    @property
    def auth_required(self) -> bool:
        """Keys are asked for unless turned off, or auto and the API listens on loopback."""
        if self.auth != "auto":
            return self.auth == "on"
        return not is_loopback_host(self.api_host)

    @property
    def api_process_count(self) -> int:
        """``api_processes``, or by default two on the embedded engine where there are two
        CPUs: its API process writes the records and waits on SQLite itself, and one (one
        event loop, one GIL) tops out near a core, short of what the workers finish. On
        RabbitMQ + Redis the store's work is Redis's, one process kept up with two workers
        on 2 cores and a second cost CPU a task (docs/performance.md); scale it out there."""
        if self.api_processes:
            return self.api_processes
        return min(2, os.cpu_count() or 1) if self.embedded_store else 1

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def embedded_store(self) -> bool:
        return self.result_backend_url is None

    def models_path(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    def store_path(self) -> Path:
        return (self.data_dir / "tasks.sqlite3").resolve()
