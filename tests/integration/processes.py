"""The service's own processes, started for real: `asyncml api`, `asyncml worker`, `asyncml up`.

Each child runs in its own session (so a kill reaches its whole tree) with its output
copied to a log file; readiness is awaited on the thing itself (a log line, /readyz),
with a deadline whose miss names what was awaited and shows the log's tail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


class ProcessError(RuntimeError):
    pass


def service_env(
    *,
    data_dir: Path,
    api_port: int,
    broker_url: str | None = None,
    backend_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    api_processes: int | None = 1,
) -> dict[str, str]:
    """A clean environment: no ASYNCML_* from the caller, loopback fetches allowed.

    One API process unless asked (``None``: the default, two on two CPUs): a test of a
    per-process limit (connections) must know which process it talks to, and each process
    is a second of start-up in CI; the tests of several processes ask for them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCML_")}
    env.update(
        ASYNCML_DATA_DIR=str(data_dir),
        ASYNCML_API_HOST="127.0.0.1",
        ASYNCML_API_PORT=str(api_port),
        ASYNCML_FETCH_ALLOW_LOOPBACK="true",
        ASYNCML_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if api_processes is not None:
        env["ASYNCML_API_PROCESSES"] = str(api_processes)
    if broker_url:
        env["ASYNCML_BROKER_URL"] = broker_url
    if backend_url:
        env["ASYNCML_RESULT_BACKEND_URL"] = backend_url
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """``asyncml ARGS`` run to its end, as an operator runs it: its output, its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "asyncml", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, from the parent links in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class ServiceProcess:
    def __init__(
        self, name: str, args: list[str], *, env: Mapping[str, str], workdir: Path
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "asyncml", *args]
        self.env = dict(env)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self._cond:
            self._lines = []
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log, proc.stdout:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                log.write(line)
                log.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "".join(self._lines[-n:])

    def wait_for_line(self, needle: str, timeout: float = 60.0) -> None:
        """Block until a line containing ``needle`` is printed (since the last start)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(needle in line for line in self._lines):
                remaining = deadline - time.monotonic()
                if self.proc is not None and self.proc.poll() is not None:
                    raise ProcessError(
                        f"{self.name} exited ({self.proc.returncode}) before printing "
                        f"{needle!r}:\n{''.join(self._lines[-40:])}"
                    )
                if remaining <= 0:
                    raise ProcessError(
                        f"{self.name} did not print {needle!r} within {timeout:g} s:\n"
                        f"{''.join(self._lines[-40:])}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful), then SIGKILL of the whole session after ``timeout``."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join()
        return self.proc.returncode

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the process itself."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        self._join()
        return code

    def kill(self) -> None:
        """SIGKILL to the whole process tree at once: a crash, no clean-up of any kind.

        The tree is read from /proc first: ``asyncml up`` puts its children in sessions
        of their own, so killing one process group would not reach them.
        """
        if self.proc is None:
            return
        if self.proc.poll() is not None:  # reaped: its pid may belong to another process now
            self._join()
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self._join()

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=10)


class Launcher:
    """Starts asyncml roles with one environment and stops every one of them at the end."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.started: list[ServiceProcess] = []

    def __call__(self, name: str, args: list[str]) -> ServiceProcess:
        process = ServiceProcess(name, args, env=self.env, workdir=self.workdir).start()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """Stop every role at the end of a test: gracefully where a broker or store outlives
        the test, at once (SIGKILL of each tree) on the embedded engine.

        Embedded roles keep every byte of their state in this launcher's data folder, which
        nothing reads after the test; their graceful stop costs seconds each time (the
        worker ends its 2 s drain wait, then billiard its 1 s polls). A test that checks a
        graceful stop calls stop() or interrupt() itself.
        """
        embedded = "ASYNCML_BROKER_URL" not in self.env
        for process in self.started:
            if embedded:
                process.kill()
            else:
                process.stop()


def wait_until_ready(base_url: str, process: ServiceProcess, timeout: float = 60.0) -> None:
    """Poll /readyz until 200: the start-up probe an orchestrator would use."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.proc is not None and process.proc.poll() is not None:
                raise ProcessError(f"{process.name} exited early:\n{process.tail()}")
            try:
                response = client.get("/readyz")
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.1)  # start-up probe interval, bounded by the deadline
    raise ProcessError(
        f"{base_url}/readyz not 200 within {timeout:g} s ({last}):\n{process.tail()}"
    )
