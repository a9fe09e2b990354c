"""Screenshots of the dashboard for the README, from a real run.

Starts ``asyncml up`` (embedded, debug kinds on) in a temporary folder on a free loopback
port, runs a few tasks through it, and saves PNGs of the overview, a task page and the
try-it form to docs/img/ with the system Chromium (Playwright; no browser download)::

    .venv/bin/python scripts/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IRIS = {"sepal_length": 6.3, "sepal_width": 2.9, "petal_length": 5.6, "petal_width": 1.8}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(base_url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("asyncml up exited before it was ready")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # a readiness probe's interval, bounded by the deadline
    raise SystemExit(f"asyncml up was not ready within {timeout_s:g} s")


def _run_tasks(base_url: str) -> str:
    """Some history for the charts; returns a finished debug.steps task's id."""
    with httpx.Client(base_url=base_url, timeout=60) as api:
        ids = [
            api.post("/v1/tasks/debug.echo", json={"payload": {"n": n}}).json()["id"]
            for n in range(40)
        ]
        ids += [api.post("/v1/tasks/model.iris", json=IRIS).json()["id"] for _ in range(10)]
        ids.append(
            api.post(
                "/v1/tasks/debug.audio_decode", json={"audio_url": "http://audio.invalid/x.wav"}
            ).json()["id"]
        )
        steps = api.post("/v1/tasks/debug.steps", json={"steps": 8, "step_s": 0.15}).json()["id"]
        for task_id in [*ids, steps]:
            api.get(f"/v1/tasks/{task_id}", params={"wait": 30})
        return str(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCML_")}
        env.update(
            ASYNCML_DATA_DIR=str(Path(workdir) / "data"),
            ASYNCML_API_PORT=str(port),
            ASYNCML_DEBUG_KINDS="true",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncml", "up", "--concurrency", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _ready(base_url, proc)
            steps = _run_tasks(base_url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(base_url=base_url, viewport={"width": 1280, "height": 900})
                page.goto("/ui/", wait_until="networkidle")
                page.screenshot(path=out / "dashboard-overview.png", full_page=True)
                page.goto(f"/ui/tasks/{steps}", wait_until="networkidle")
                page.screenshot(path=out / "dashboard-task.png", full_page=True)
                page.goto("/ui/kinds/model.iris", wait_until="networkidle")
                for name, value in IRIS.items():
                    page.locator(f"#in-{name}").fill(str(value))
                page.get_by_role("button", name="Submit").click()
                page.locator("#try-output").wait_for()
                page.screenshot(path=out / "dashboard-try-it.png", full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for name in ("dashboard-overview", "dashboard-task", "dashboard-try-it"):
        print(out / f"{name}.png")


if __name__ == "__main__":
    main()
