"""Deployment files read as data: compose.yaml, the Dockerfile, .env.example, .dockerignore and
the KEDA example; and the guard of ``asyncml flower``. No container engine is needed (none
exists where these run): scripts/check-deploy.sh validates the same files with compose's own
schema, docker-compose and hadolint.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from asyncml.cli import app
from asyncml.cli.flower import FlowerRefused, flower_argv
from asyncml.engine.app import WEBHOOK_QUEUE, all_queues
from asyncml.registry import build_registry, default_registry
from asyncml.settings import Settings

ROOT = Path(__file__).parents[2]
INFRA = {"rabbitmq", "redis"}
SECRETS = ("RABBITMQ_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|AUTH|API_KEY|CREDENTIAL", re.IGNORECASE)


# --- reading the files ------------------------------------------------------------------------


@cache
def compose_text() -> str:
    return (ROOT / "compose.yaml").read_text()


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(compose_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run this project's image (every one but RabbitMQ and Redis)."""
    return {name: svc for name, svc in services().items() if name not in INFRA}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def worker_queues() -> dict[str, list[str]]:
    """Service name -> the queues its ``asyncml worker --queues`` command consumes."""
    found = {}
    for name, svc in app_services().items():
        argv = command(svc)
        if argv[:1] == ["worker"]:
            assert "--queues" in argv, f"{name}: a worker must name its queues"
            found[name] = argv[argv.index("--queues") + 1].split(",")
    return found


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@cache
def dockerfile() -> list[Stage]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def final_stage() -> Stage:
    return dockerfile()[-1]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# --- compose.yaml -----------------------------------------------------------------------------


def test_compose_runs_broker_store_api_flower_and_workers() -> None:
    assert {"rabbitmq", "redis", "api", "flower"} <= set(services())
    assert worker_queues(), "no worker service"


def test_app_services_run_one_image_whose_command_picks_the_role() -> None:
    images = {svc.get("image") for svc in app_services().values()}
    assert len(images) == 1, images
    roles = {name: command(svc)[:1] for name, svc in app_services().items()}
    assert roles["api"] == ["api"]
    assert roles["flower"] == ["flower"]
    assert all(roles[name] == ["worker"] for name in worker_queues())


_NO_MODELS = Path("/nonexistent/asyncml-models")


def test_worker_services_cover_every_queue_of_the_registry_and_webhooks() -> None:
    consumed = [q for queues in worker_queues().values() for q in queues]
    # The built-in kinds and the bundled example models (a compose stack serves them too).
    expected = set(all_queues(build_registry(Settings(_env_file=None, models_dir=_NO_MODELS))))
    assert WEBHOOK_QUEUE in expected
    assert set(consumed) == expected
    assert len(consumed) == len(set(consumed)), "a queue is consumed by two worker services"


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in services().items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), f"{name} disables its healthcheck"
        assert check.get("test"), f"{name}'s healthcheck runs nothing"


def test_api_and_flower_healthchecks_probe_their_own_endpoints() -> None:
    assert "/healthz" in " ".join(services()["api"]["healthcheck"]["test"])
    assert "/healthcheck" in " ".join(services()["flower"]["healthcheck"]["test"])


def test_services_wait_for_healthy_dependencies() -> None:
    for name, svc in app_services().items():
        needs = svc.get("depends_on")
        assert isinstance(needs, dict), f"{name} must wait on conditions, not a bare list"
        assert "rabbitmq" in needs, f"{name} does not wait for RabbitMQ"
        for dependency, condition in needs.items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert services()[dependency].get("healthcheck"), dependency
    for name in ["api", *worker_queues()]:
        assert "redis" in services()[name]["depends_on"], f"{name} does not wait for Redis"


def test_broker_and_store_keep_their_data_in_named_volumes() -> None:
    declared = set(compose().get("volumes") or {})
    for name, target in (("rabbitmq", "/var/lib/rabbitmq"), ("redis", "/data")):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services()[name]["volumes"]}
        assert target in mounts, f"{name} keeps no data in {target}"
        assert mounts[target] in declared, f"{name}'s {mounts[target]} is not a named volume"


def test_rabbitmq_has_a_fixed_node_name_and_the_management_plugin() -> None:
    rabbit = services()["rabbitmq"]
    assert rabbit.get("hostname"), "the node name (and its data folder) would change"
    assert "management" in rabbit["image"]


def test_redis_appends_every_write_and_fsyncs_every_second() -> None:
    cmd = " ".join(command(services()["redis"]))
    assert re.search(r"--appendonly\s+yes", cmd)
    assert re.search(r"--appendfsync\s+everysec", cmd)
    assert re.search(r"--requirepass\s+\"?\$\$?\{?REDIS_PASSWORD", cmd)


def test_app_services_reach_rabbitmq_and_redis_by_url() -> None:
    for name, svc in app_services().items():
        env = environment(svc)
        assert env["ASYNCML_BROKER_URL"].startswith("amqp://"), name
        assert "@rabbitmq:5672/" in env["ASYNCML_BROKER_URL"], name
        assert env["ASYNCML_RESULT_BACKEND_URL"].startswith("redis://"), name
        assert "@redis:6379/" in env["ASYNCML_RESULT_BACKEND_URL"], name


def test_api_service_listens_on_every_interface_of_its_published_port() -> None:
    api = services()["api"]
    env = environment(api)
    assert env["ASYNCML_API_HOST"] == "0.0.0.0"
    assert any(str(p).endswith(f":{env['ASYNCML_API_PORT']}") for p in api["ports"])


def test_required_secrets_are_interpolated_with_an_error_message() -> None:
    for match in _INTERPOLATION.finditer(compose_text()):
        variable, modifier = match.groups()
        if variable in SECRETS or _SECRET_NAME.search(variable):
            assert modifier.startswith(":?") and len(modifier) > 2, match.group(0)
    used = {m.group(1) for m in _INTERPOLATION.finditer(compose_text())}
    assert set(SECRETS) <= used


def test_compose_holds_no_secret_literal() -> None:
    text = _INTERPOLATION.sub("VAR", compose_text())
    for user, password in re.findall(r"://([^:@/\s\"']*):([^@/\s\"']*)@", text):
        assert user in ("", "VAR") and password in ("", "VAR"), f"credentials {user}:{password}"
    for name, svc in services().items():
        for key, value in environment(svc).items():
            if _SECRET_NAME.search(key) and not value.startswith("/run/secrets/"):
                assert _INTERPOLATION.fullmatch(value), f"{name}: {key} is not from .env"


def test_env_example_names_every_required_variable_and_holds_no_secret() -> None:
    example = env_example()
    required = {
        m.group(1) for m in _INTERPOLATION.finditer(compose_text()) if m.group(2).startswith(":?")
    }
    assert required <= set(example), required - set(example)
    for key in SECRETS:
        assert example[key] == "", f".env.example gives {key} a value"


# --- Dockerfile and .dockerignore -------------------------------------------------------------


def test_dockerfile_builds_in_one_stage_and_runs_from_another() -> None:
    stages = dockerfile()
    assert len(stages) >= 2
    assert final_stage().image.startswith("python:3.11-slim")
    builder = {stage.name for stage in stages[:-1]}
    copied = [args for args in final_stage().args("COPY") if args.startswith("--from=")]
    assert copied and all(args.split()[0].removeprefix("--from=") in builder for args in copied)


def test_image_installs_from_the_lock_without_dev_dependencies() -> None:
    runs = " ".join(arg for stage in dockerfile()[:-1] for arg in stage.args("RUN"))
    assert "uv sync --frozen --no-dev" in runs


def test_final_stage_has_no_build_tools() -> None:
    runs = " ".join(final_stage().args("RUN"))
    for tool in ("apt-get", "apk ", "pip ", "uv ", "gcc", "build-essential"):
        assert tool not in runs, f"final stage runs {tool.strip()}"


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = final_stage().args("USER")
    assert users, "the final stage sets no USER: it runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_api_listens_on_every_interface_in_the_image() -> None:
    envs = " ".join(final_stage().args("ENV"))
    assert re.search(r"\bASYNCML_API_HOST=0\.0\.0\.0\b", envs)


def test_image_healthcheck_probes_healthz_with_python() -> None:
    (check,) = final_stage().args("HEALTHCHECK")
    assert "python" in check and "urllib" in check and "/healthz" in check
    assert "curl" not in check


def test_image_command_picks_the_role_and_defaults_to_the_api() -> None:
    assert final_stage().args("ENTRYPOINT")[-1] == '["asyncml"]'
    assert final_stage().args("CMD")[-1] == '["api"]'


def test_image_bakes_in_no_secret() -> None:
    for stage in dockerfile():
        for keyword in ("ENV", "ARG"):
            for args in stage.args(keyword):
                assert not _SECRET_NAME.search(args), f"{keyword} {args}"
                assert not re.search(r"://[^/\s]*:[^/\s]*@", args), f"{keyword} {args}"


def test_dockerignore_allows_only_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "not an allow-list: .env or .venv could reach the image"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "src"}


# --- KEDA -------------------------------------------------------------------------------------


def test_keda_scales_the_audio_workers_on_the_audio_queue() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy/keda-scaledobject.yaml").read_text()))
    (scaled,) = [d for d in documents if d["kind"] == "ScaledObject"]
    assert scaled["apiVersion"].startswith("keda.sh/")
    assert scaled["spec"]["scaleTargetRef"]["name"].endswith("worker-audio")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "audio"
    assert "audio" in all_queues(default_registry())
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert "host" not in trigger["metadata"], "the broker's password belongs in a Secret"
    auth_names = {d["metadata"]["name"] for d in documents if d["kind"] == "TriggerAuthentication"}
    assert trigger["authenticationRef"]["name"] in auth_names


# --- asyncml flower ---------------------------------------------------------------------------

RABBIT = "amqp://u:pw@rabbitmq:5672//"


def test_flower_refuses_the_embedded_broker() -> None:
    with pytest.raises(FlowerRefused, match="ASYNCML_BROKER_URL"):
        flower_argv(Settings(_env_file=None), address="127.0.0.1", port=5555)


def test_flower_refuses_a_public_address_without_basic_auth() -> None:
    settings = Settings(_env_file=None, broker_url=RABBIT)
    with pytest.raises(FlowerRefused, match="FLOWER_BASIC_AUTH"):
        flower_argv(settings, address="0.0.0.0", port=5555)


def test_flower_on_loopback_needs_no_auth() -> None:
    settings = Settings(_env_file=None, broker_url=RABBIT)
    argv = flower_argv(settings, address="127.0.0.1", port=5555)
    assert argv[0] == "flower" and not any(a.startswith("--basic_auth") for a in argv)


def test_flower_passes_port_basic_auth_and_management_api() -> None:
    settings = Settings(_env_file=None, broker_url=RABBIT)
    argv = flower_argv(
        settings,
        address="0.0.0.0",
        port=5600,
        basic_auth="admin:pw",
        broker_api="http://u:pw@rabbitmq:15672/api/",
    )
    assert {"--address=0.0.0.0", "--port=5600", "--basic_auth=admin:pw"} <= set(argv)
    assert "--broker_api=http://u:pw@rabbitmq:15672/api/" in argv


def test_flower_refuses_basic_auth_without_a_password() -> None:
    settings = Settings(_env_file=None, broker_url=RABBIT)
    with pytest.raises(FlowerRefused, match="user:password"):
        flower_argv(settings, address="0.0.0.0", port=5555, basic_auth="admin")


def test_flower_is_an_asyncml_command() -> None:
    result = CliRunner().invoke(app, ["flower", "--help"])
    assert result.exit_code == 0
    assert "--broker-api" in result.output and "--basic-auth" in result.output
