"""The README's and the documentation's runnable blocks run, so they cannot drift (issue 20,
point 6).

A fenced block whose info string is ``bash test`` is runnable. The blocks of one file run in
order in one bash (``set -euo pipefail``: a failing command fails the test), against a real
``asyncml up`` on the embedded default with loopback fetches allowed, as the walkthrough
starts it. The blocks name the defaults a reader types (``localhost:8000``, the demo file
server on port 9000, ``/path/to/checkout``, ``/tmp/asyncml-demo``); the test swaps in free
ports and its own folders. Processes a block leaves running (a file server started with
``&``) are ended with the block's process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import Launcher, service_env, wait_until_ready
from .services import free_ports

ROOT = Path(__file__).parents[2]
_BLOCK = re.compile(r"^```bash test\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


def test_the_readme_and_the_docs_have_runnable_blocks() -> None:
    assert runnable_blocks(ROOT / "README.md"), "the README's walkthrough is not marked"
    assert runnable_blocks(ROOT / "docs" / "index.md"), "the tour is not marked"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("doc-blocks")
    (port,) = free_ports(1)
    launch = Launcher(service_env(data_dir=workdir / "data", api_port=port), workdir)
    try:
        up = launch("up", ["up", "--concurrency", "1"])
        base_url = f"127.0.0.1:{port}"
        wait_until_ready(f"http://{base_url}", up, timeout=120)
        yield base_url
    finally:
        launch.stop_all()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "document",
    [p for p in DOCUMENTS if runnable_blocks(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_runnable_blocks_run_against_a_real_service(
    document: Path, api: str, tmp_path: Path
) -> None:
    (files_port,) = free_ports(1)
    script = "\n".join(runnable_blocks(document))
    for typed, real in (
        ("localhost:8000", api),
        ("127.0.0.1:8000", api),
        (":9000", f":{files_port}"),
        ("--port 9000", f"--port {files_port}"),
        ("/path/to/checkout", str(ROOT)),
        ("/tmp/asyncml-demo", str(tmp_path / "demo")),  # noqa: S108  # the text replaced
    ):
        script = script.replace(typed, real)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCML_")}
    env["ASYNCML_URL"] = f"http://{api}"
    log_path = tmp_path / "blocks.log"
    # Output to a file, not a pipe: a process a block leaves running holds a pipe open.
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ) as shell,
    ):
        try:
            shell.wait(timeout=240)
        finally:
            try:
                os.killpg(shell.pid, signal.SIGTERM)  # what the blocks left running
            except ProcessLookupError:
                pass
    output = log_path.read_text()
    assert shell.returncode == 0, f"{document.name} blocks failed:\n{script}\n---\n{output}"
