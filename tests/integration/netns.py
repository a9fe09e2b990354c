"""Several hosts on one machine: Linux network namespaces on a virtual switch.

Each host is a network namespace with `lo` and one interface, `eth0`, addressed in
10.231.0.0/24. The other end of each veth pair hangs on a bridge in a namespace of its
own (the switch). Everything is created inside those namespaces (`ip -n`, veth peers
born in their namespace), nothing in the root one, and no host has a route out: the
test traffic never leaves the machine, and the root namespace cannot reach it either.

Code acts on a host by running in one of that host's threads: each host keeps a thread
pool whose threads have joined its namespace (setns(2) moves only the calling thread),
so the sockets they open, the servers they bind and the processes they start all belong
to that host. That covers in-process probes and clients as well as child processes,
which `ip netns exec` alone would not.

A server started from a host thread with PR_SET_PDEATHSIG (services.py) is signalled
when that thread ends, not when pytest does: the pools keep their threads until close(),
so stop such servers before closing the network.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import pytest

SUBNET = "10.231.0"  # .0/24; .1 is the first host
INSTALL_HINT = "install iproute2 (scripts/ensure-services.sh installs it)"
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"
_THREADS_PER_HOST = 16

P = ParamSpec("P")
T = TypeVar("T")


class NetnsError(RuntimeError):
    """An `ip` command building or removing the virtual network failed."""


class NetnsUnavailable(NetnsError):
    """This machine will not create a network namespace (a container without the right)."""


def require_netns() -> str:
    """The path of `ip`; skip where namespaces are out of reach, fail under CI for `ip`.

    Not Linux or not root: skip, the test cannot run here. A missing `ip` is only a
    missing package, so CI (CI=true) fails rather than going green by skipping.
    """
    if sys.platform != "linux":
        pytest.skip(f"needs Linux network namespaces; this is {sys.platform}")
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and veth pairs")
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    ip = shutil.which("ip", path=search_path)
    if ip is None:
        message = f"`ip` not found: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return ip


class Host:
    """One namespace with one address; run code there with run() or submit()."""

    def __init__(self, role: str, netns: str, address: str) -> None:
        self.role = role
        self.netns = netns
        self.address = address
        self._pool = ThreadPoolExecutor(
            max_workers=_THREADS_PER_HOST,
            thread_name_prefix=f"netns-{role}",
            initializer=_join_netns,
            initargs=(netns,),
        )

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._pool.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        # Without waiting: on a failed test a thread may still be in a long call; its
        # sockets go when the namespace does.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"Host({self.role}, {self.address}, netns={self.netns})"


def _join_netns(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"{_NETNS_DIR}/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Network:
    """Hosts named by role on one bridge, addressed in order from SUBNET.1.

    Namespace names are `aml-<random>-<role>` (and `-switch`), unique per network, so
    close() removes exactly what this network made, even after a partial build.
    """

    def __init__(self, roles: Sequence[str]) -> None:
        if len(set(roles)) != len(roles) or not 0 < len(roles) < 254:
            raise ValueError(f"roles must be distinct, 1 to 253 of them: {roles}")
        self.ip = require_netns()
        self.prefix = f"aml-{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-switch"
        self.hosts = {
            role: Host(role, f"{self.prefix}-{role}", f"{SUBNET}.{i}")
            for i, role in enumerate(roles, start=1)
        }
        self._made: list[str] = []

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def role_of(self, address: str) -> str:
        for host in self.hosts.values():
            if host.address == address:
                return host.role
        return address

    def _ip(self, *args: str) -> None:
        result = subprocess.run(
            [self.ip, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise NetnsError(f"ip {' '.join(args)}: status {result.returncode}: {result.stderr}")

    def _add_netns(self, name: str) -> None:
        self._ip("netns", "add", name)
        self._made.append(name)

    def open(self) -> Self:
        try:
            self._add_netns(self.switch)
        except NetnsError as exc:
            raise NetnsUnavailable(f"cannot create a network namespace: {exc}") from None
        try:
            self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.switch, "link", "set", "br0", "up")
            for host in self.hosts.values():
                self._add_netns(host.netns)
                # Born in their namespaces: the veth never shows in the root one.
                self._ip(
                    "-n", self.switch, "link", "add", host.role, "type", "veth",
                    "peer", "name", "eth0", "netns", host.netns,
                )  # fmt: skip
                self._ip("-n", self.switch, "link", "set", host.role, "master", "br0", "up")
                self._ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
                self._ip("-n", host.netns, "link", "set", "eth0", "up")
                self._ip("-n", host.netns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the host threads, SIGKILL whatever still runs in a namespace, delete them.

        Processes are found by namespace (`ip netns pids`): only this network's, whose
        names are unique to it. Deleting a namespace deletes its veth ends and the bridge.
        """
        for host in self.hosts.values():
            host.close()
        errors: list[str] = []
        for name in reversed(self._made):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                pids = subprocess.run(
                    [self.ip, "netns", "pids", name],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                ).stdout.split()
                for pid in map(int, pids):
                    if pid != os.getpid():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            try:
                self._ip("netns", "del", name)
            except NetnsError as exc:
                errors.append(str(exc))
        self._made.clear()
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
