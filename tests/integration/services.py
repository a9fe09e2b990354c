"""Real Redis and RabbitMQ servers, started by the tests on free loopback ports.

Each server owns one working directory (data, logs, config) and its process group, so a
test can stop it and start it again on the same port with the same data: that is how
restart tests check durability. Nothing listens beyond 127.0.0.1 unless a test passes
another `host` (an address inside a network namespace of its own, see netns.py), and
nothing is read from the system configuration (/etc/redis, /etc/rabbitmq, /var/lib/rabbitmq).

Readiness means answering the real protocol (Redis PING, an AMQP handshake), not an open
port: RabbitMQ accepts TCP connections before it will accept AMQP logins.

RabbitMQ needs epmd, the Erlang port mapper. Each RabbitMQServer runs its own epmd on a
free loopback port (ERL_EPMD_PORT) and stops it with the node, so no epmd outlives the
tests and the system epmd on 4369, if any, is never used. Left to itself, Erlang would
start an `epmd -daemon` on 4369, bound to all interfaces, that outlives everything.

Servers run in their own process group, so Ctrl-C reaches pytest only and teardown stops
them in order. On Linux they also get SIGTERM if pytest dies without tearing down.

Only this module starts servers; fixtures live in conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import kombu
import kombu.exceptions
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

INSTALL_HINT = "run scripts/ensure-services.sh"

# Not on an unprivileged user's PATH on Debian, but where the packages put the servers.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Debian's /usr/sbin/rabbitmq-* are this wrapper, which `su`s to the rabbitmq user when run
# as root: that user cannot write our temporary directory and ignores our HOME (cookie).
_DEBIAN_RABBITMQ_WRAPPER = "rabbitmq-script-wrapper"
_DEBIAN_RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")

_LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A test server could not be started or stopped."""


class ServiceStartError(ServiceError):
    """A test server exited or missed its readiness deadline while starting."""


class ServiceStopError(ServiceError):
    """A test server did not exit before its deadline and was killed."""


def require_binary(name: str) -> str:
    """Return the path of `name`; fail under CI=true, else skip, when it is missing.

    CI must not go green by skipping every integration test because a package is missing.
    """
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS])
    path = shutil.which(name, path=search_path)
    if path is not None:
        return path
    message = f"{name} not found on PATH or in {', '.join(_SBIN_DIRS)}: {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback TCP ports that were free a moment ago.

    The ports are released before the server binds them, so another process could take
    one in between; the server start then fails with "address in use" in its log tail.
    All sockets stay open until every port is picked, so the ports differ.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"--- {path}: (missing)"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- {path} (last {lines} lines):\n{tail}"


if sys.platform == "linux":
    _PR_SET_PDEATHSIG = 1
    # Looked up before any fork: the child between fork and exec should only make the call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl

    def _die_with_parent() -> None:
        """SIGTERM the server when pytest dies without tearing down (SIGKILL, OOM)."""
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

else:
    _die_with_parent = None


def _popen(
    command: list[str], *, log: Path, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group, stdout and stderr appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _await(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    *,
    what: str,
    timeout: float,
    logs: list[Path],
    poll_interval: float = 0.05,
) -> None:
    """Probe `ready` until it holds; fail early if `process` exits, or at the deadline.

    The pause between probes is a wait on the process itself, so a server that dies
    while starting is reported at once instead of at the deadline.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        try:
            returncode = process.wait(timeout=poll_interval)
        except subprocess.TimeoutExpired:
            pass
        else:
            tails = "\n".join(_log_tail(log) for log in logs)
            raise ServiceStartError(
                f"{what}: process exited with status {returncode} while starting\n{tails}"
            )
        if time.monotonic() > deadline:
            tails = "\n".join(_log_tail(log) for log in logs)
            raise ServiceStartError(f"{what}: not ready after {timeout:.0f}s\n{tails}")


def _terminate(process: subprocess.Popen[bytes], *, what: str, timeout: float) -> None:
    """SIGTERM the process (a graceful shutdown for both servers), SIGKILL its group late.

    Also SIGKILLs whatever is left in the process group after a clean exit, so no child
    of the server survives it.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise ServiceStopError(
                f"{what}: still running {timeout:.0f}s after SIGTERM; killed it"
            ) from None
    _kill_group(process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # A process group lives while any member does, so its id cannot be reused by then; once
    # all are gone, killpg finds nothing (reuse would need the pid counter to wrap first).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _Server(ABC):
    """One server process with a working directory that outlives stop() and start()."""

    readiness: str  # what _ready() probes, for the deadline error

    def __init__(self, workdir: Path, *, start_timeout: float, stop_timeout: float) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    @abstractmethod
    def url(self) -> str:
        """Where clients connect."""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def console_log(self) -> Path:
        """The server's stdout and stderr, appended across restarts."""
        return self.workdir / "console.log"

    @property
    def logs(self) -> list[Path]:
        """Files whose tails explain a failed start."""
        return [self.console_log]

    @abstractmethod
    def _command(self) -> list[str]: ...

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def _ready(self) -> bool:
        """One quick readiness probe; False rather than an exception while starting."""

    def start(self) -> Self:
        if self.running:
            raise ServiceError(f"{self!r} is already running")
        self._stop_server()  # reaps a server that died on its own
        self._process = _popen(
            self._command(), log=self.console_log, env=self._env(), cwd=self.workdir
        )
        try:
            _await(
                self._ready,
                self._process,
                what=f"{self!r} awaiting {self.readiness} at {self.url}",
                timeout=self.start_timeout,
                logs=self.logs,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop_server()

    def _stop_server(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _terminate(process, what=repr(self), timeout=self.stop_timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the server's process group: alive but silent, like a hung host."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self._process.pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url}, workdir={str(self.workdir)!r})"


class RedisServer(_Server):
    """redis-server on 127.0.0.1 (or `host`), its data in `workdir`.

    `appendonly=True` (the default) makes data survive stop() and start(); SIGTERM makes
    Redis fsync the append-only file before it exits.

    On another `host` protected mode is off: without a password it would refuse every
    client but loopback ones. Readiness is probed at `host`, so start() must run where
    that address is reachable (in its namespace's thread, for netns.py hosts).
    """

    readiness = "PING"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = binary or require_binary("redis-server")
        self.host = host
        self.port = port or free_ports(1)[0]
        self.appendonly = appendonly
        super().__init__(workdir, start_timeout=start_timeout, stop_timeout=stop_timeout)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client with short timeouts; the caller closes it (it is a context manager)."""
        return redis.Redis(
            host=self.host, port=self.port, socket_connect_timeout=1.0, socket_timeout=5.0
        )

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if not _is_loopback(self.host):
            command += ["--protected-mode", "no"]
        return command

    def _ready(self) -> bool:
        # One attempt: redis-py's default retries would hide an exited server for seconds.
        probe = redis.Redis(
            host=self.host,
            port=self.port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), retries=0),
        )
        with probe:
            try:
                return bool(probe.ping())
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                return False


class RabbitMQServer(_Server):
    """A rabbitmq-server node on 127.0.0.1, with its own epmd, all state in `workdir`.

    The node name, ports and Mnesia directory are fixed at construction, so start() after
    stop() brings back durable queues and persistent messages. Default user guest/guest,
    which RabbitMQ allows from loopback only. No plugins.

    With another `host`, AMQP listens there and guest may log in from anywhere; epmd and
    Erlang distribution stay on 127.0.0.1 (the node is `...@localhost`), which is the
    namespace's own loopback when the node runs in one. Readiness is probed at `host`, so
    start() must run where that address is reachable.

    HOME is `workdir/home`, where Erlang creates the cookie that rabbitmqctl() then uses;
    RABBITMQ_ERLANG_COOKIE is deprecated in 3.10.

    `vhosts` are created at boot from a definitions file (free, unlike `rabbitmqctl
    add_vhost`, which boots an Erlang VM of its own): one node then serves several stacks
    that must not see each other's queues, each on its own vhost. `url` points at `vhost`,
    "/" unless a fixture picks another one.
    """

    readiness = "an AMQP login"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
        node_name: str | None = None,
        binary: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        host: str = "127.0.0.1",
        vhosts: Sequence[str] = (),
    ) -> None:
        self.server_script = _unwrap_debian_rabbitmq(binary or require_binary("rabbitmq-server"))
        self.host = host
        self.vhosts = ("/", *vhosts)
        self.vhost = "/"
        self.ctl_script = self.server_script.with_name("rabbitmqctl")
        self.epmd_binary = require_binary("epmd")
        picked = free_ports(3)
        self.port = port or picked[0]
        self.dist_port = dist_port or picked[1]
        self.epmd_port = epmd_port or picked[2]
        self.node_name = node_name or f"asyncml-test-{secrets.token_hex(4)}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None
        super().__init__(workdir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        for sub in ("home", "mnesia", "log"):
            (workdir / sub).mkdir(exist_ok=True)
        config = "log.console = false\nlog.file.level = info\n"
        if not _is_loopback(host):
            config += "loopback_users = none\n"  # guest from other hosts too: test only
        if vhosts:
            definitions = workdir / "definitions.json"
            definitions.write_text(json.dumps(_definitions(self.vhosts)))
            config += f"load_definitions = {definitions}\n"
        (workdir / "rabbitmq.conf").write_text(config)
        (workdir / "enabled_plugins").write_text("[].\n")
        # Replaces /etc/rabbitmq/rabbitmq-env.conf, which the scripts would otherwise source.
        (workdir / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return self.url_for(self.vhost)

    def url_for(self, vhost: str) -> str:
        """The AMQP URL of one of this node's vhosts ("/" gives the usual `...//`)."""
        if vhost not in self.vhosts:
            raise ServiceError(f"{vhost!r} is not among {self.node_name}'s {self.vhosts}")
        return f"amqp://guest:guest@{self.host}:{self.port}/{vhost}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "log" / f"{self.node_name}.log"

    @property
    def logs(self) -> list[Path]:
        return [self.console_log, self.log_file, self.workdir / "epmd.log"]

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(self.workdir / "home"),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            # The default, node port + 20000, is out of range for most free ports.
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.workdir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            # Our epmd must already run: never let the node start a stray one.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=f"{loopback_dist} -start_epmd false",
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
        )
        return env

    def _command(self) -> list[str]:
        return [str(self.server_script)]

    def _ready(self) -> bool:
        with kombu.Connection(self.url, connect_timeout=1.0) as connection:
            try:
                connection.ensure_connection(max_retries=0)
            except kombu.exceptions.OperationalError:
                return False
            return True

    def _start_epmd(self) -> None:
        log = self.workdir / "epmd.log"
        command = [self.epmd_binary, "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        self._epmd = _popen(command, log=log, env=self._env(), cwd=self.workdir)
        try:
            _await(
                lambda: _accepts_tcp(self.epmd_port),
                self._epmd,
                what=f"epmd for {self.node_name} awaiting 127.0.0.1:{self.epmd_port}",
                timeout=10.0,
                logs=[log],
            )
        except BaseException:
            self._stop_epmd()
            raise

    def _stop_epmd(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            _terminate(epmd, what=f"epmd on port {self.epmd_port}", timeout=10.0)

    def start(self) -> Self:
        if not self.running and (self._epmd is None or self._epmd.poll() is not None):
            self._stop_epmd()
            self._start_epmd()
        return super().start()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._stop_epmd()

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run `rabbitmqctl -n NODE ARGS...` against this node and return its stdout.

        Only while the node runs: against a stopped node the CLI starts an epmd of its own
        on our epmd port, which would outlive the test and block the next start().
        """
        if not self.running:
            raise ServiceError(f"rabbitmqctl {' '.join(args)}: {self!r} is not running")
        result = subprocess.run(
            [str(self.ctl_script), "-n", self.node_name, *args],
            env=self._env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"rabbitmqctl {' '.join(args)} on {self.node_name} exited with status "
                f"{result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result.stdout


def _definitions(vhosts: Sequence[str]) -> dict[str, object]:
    """Boot-time definitions: guest/guest (a node importing definitions creates no default
    user) with every right on each of `vhosts`."""
    salt = secrets.token_bytes(4)  # RabbitMQ's salted SHA-256: base64(salt + sha256(salt + pw))
    digest = base64.b64encode(salt + hashlib.sha256(salt + b"guest").digest()).decode()
    return {
        "users": [
            {
                "name": "guest",
                "password_hash": digest,
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
            }
        ],
        "vhosts": [{"name": vhost} for vhost in vhosts],
        "permissions": [
            {"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
            for vhost in vhosts
        ],
    }


def _unwrap_debian_rabbitmq(path: str) -> Path:
    """Use the upstream script behind Debian's `su rabbitmq` wrapper when there is one."""
    resolved = Path(path).resolve()
    if resolved.name == _DEBIAN_RABBITMQ_WRAPPER:
        return _DEBIAN_RABBITMQ_BIN / Path(path).name
    return Path(path)


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
