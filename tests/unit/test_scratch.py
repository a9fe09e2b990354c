"""A task's scratch folder (``ctx.scratch_dir()``): private to the task, gone after it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from asyncml.engine.runtime import WorkerRuntime
from asyncml.kinds import SCRATCH_PREFIX, TaskContext, task_kind
from asyncml.settings import Settings
from asyncml.store import TaskRecord, TaskStatus, utcnow
from asyncml.store.sqlite import SqliteTaskStore


class In(BaseModel):
    fail: bool = False


class Out(BaseModel):
    wrote: str


used: list[Path] = []


@task_kind("test.scratch", queue="test")
def writes_scratch(inp: In, ctx: TaskContext) -> Out:
    """Write a file into the task's folder, then succeed or fail as asked."""
    folder = ctx.scratch_dir()
    used.append(folder)
    (folder / "download").write_bytes(b"x" * 1024)
    if inp.fail:
        raise RuntimeError("failed after writing")
    return Out(wrote=str(folder))


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temp folder, moved into the test's: the runtime's default root."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def runtime(settings: Settings, temp_root: Path) -> Iterator[WorkerRuntime]:
    used.clear()
    rt = WorkerRuntime(settings, store_retry_s=0.2)
    yield rt
    rt.store.close()


def run(runtime: WorkerRuntime, store: SqliteTaskStore, task_id: str, *, fail: bool) -> None:
    store.create(
        TaskRecord(id=task_id, kind="test.scratch", status=TaskStatus.QUEUED, submitted_at=utcnow())
    )
    runtime.execute(writes_scratch, task_id, {"fail": fail})


def scratch_folders(root: Path) -> list[Path]:
    return sorted(root.glob(f"{SCRATCH_PREFIX}*"))


def test_scratch_folder_is_named_for_its_process_under_the_root(tmp_path: Path) -> None:
    ctx = TaskContext(Settings(_env_file=None, data_dir=tmp_path), scratch_root=tmp_path)
    folder = ctx.scratch_dir()
    assert folder.is_dir() and folder.parent == tmp_path
    assert folder.name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
    assert ctx.scratch_dir() == folder  # one folder per task, made once


def test_a_task_that_wrote_scratch_files_leaves_nothing_after_it_succeeds(
    runtime: WorkerRuntime, store: SqliteTaskStore, temp_root: Path
) -> None:
    run(runtime, store, "t1", fail=False)
    record = store.get("t1")
    assert record is not None and record.status is TaskStatus.SUCCESS
    assert used and used[0].parent == temp_root
    assert scratch_folders(temp_root) == []


def test_a_task_that_wrote_scratch_files_leaves_nothing_after_it_fails(
    runtime: WorkerRuntime, store: SqliteTaskStore, temp_root: Path
) -> None:
    run(runtime, store, "t1", fail=True)
    record = store.get("t1")
    assert record is not None and record.status is TaskStatus.FAILURE
    assert used
    assert scratch_folders(temp_root) == []


def test_a_kind_run_outside_a_worker_leaves_nothing_either(tmp_path: Path) -> None:
    ctx = TaskContext(Settings(_env_file=None, data_dir=tmp_path), scratch_root=tmp_path)
    with pytest.raises(RuntimeError, match="failed after writing"):
        writes_scratch.run({"fail": True}, ctx)
    writes_scratch.run({"fail": False}, ctx)
    assert scratch_folders(tmp_path) == []


def test_each_task_gets_a_folder_of_its_own(runtime: WorkerRuntime, store: SqliteTaskStore) -> None:
    run(runtime, store, "t1", fail=False)
    run(runtime, store, "t2", fail=False)
    assert len(set(used)) == 2


def test_copies_of_one_context_have_separate_scratch_folders(tmp_path: Path) -> None:
    """The runtime gives each task a copy of its process's context (threads share one)."""
    process_ctx = TaskContext(Settings(_env_file=None, data_dir=tmp_path), scratch_root=tmp_path)
    first = dataclasses.replace(process_ctx, task_id="a")
    second = dataclasses.replace(process_ctx, task_id="b")
    mine, theirs = first.scratch_dir(), second.scratch_dir()
    assert mine != theirs
    first.remove_scratch()
    assert not mine.exists()
    assert theirs.is_dir()


def test_a_worker_process_removes_the_scratch_folders_of_dead_processes_when_it_starts(
    settings: Settings, temp_root: Path
) -> None:
    live = temp_root / f"{SCRATCH_PREFIX}{os.getpid()}-abc"
    dead = temp_root / f"{SCRATCH_PREFIX}{_exited_pid()}-def"
    for folder in (live, dead):
        folder.mkdir()
        (folder / "download").write_bytes(b"x")
    runtime = WorkerRuntime(settings, store_retry_s=0.2)
    try:
        runtime.store  # noqa: B018  # what a worker process does first: open its store
    finally:
        runtime.store.close()
    assert live.exists()  # a live process's task may still be using it
    assert not dead.exists()


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
