"""`audio.length` on WAV and MP3 files served by the bench, and the issue's decode baseline.

The files are written at CD quality, the common case for WAV: 44.1 kHz, 16-bit, stereo (a
300 s file is 53 MB). A 16 kHz mono file would make every baseline (download, decode) look
cheap.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from stack import WORKER_CONCURRENCY, started

from .context import Context
from .measure import MakeInput, closed_loop, measure, target, warm
from .tables import fmt_ms, fmt_num

AUDIO_RATE, AUDIO_CHANNELS = 44_100, 2
LONG_WAV = "tone-300s-44k-stereo.wav"
SECONDS_PER_FILE = 10.0


def run(ctx: Context) -> dict[str, Any]:
    files_dir = ctx.workdir / "files"
    names = _write_files(files_dir)
    bounds = replace(ctx.bounds, seconds=SECONDS_PER_FILE)
    runs = []
    ranged: dict[str, Any] = {}
    with started(ctx.stack(ctx.engine, {})) as stack:
        first = f"{ctx.sources.url}/files/{names[0]}"
        warm(stack, "audio.length", lambda i: {"audio_url": first}, 8)
        for name in names:
            size = (files_dir / name).stat().st_size
            run = measure(
                stack,
                closed_loop(stack, "audio.length", _audio_input(ctx.sources.url, name), bounds),
                name=f"audio.length {name} ({size / 1e6:.2f} MB)",
                engine=stack.engine,
                kind="audio.length",
            )
            runs.append(ctx.with_ratios(run))
            if name == LONG_WAV:
                ranged = run
        # The 300 s WAV from a server that ignores Range, two ways: the service's fallback
        # (audio.length downloads the whole file and reads its header with soundfile, no
        # decode), and the baseline through the same platform (debug.audio_decode
        # downloads the whole file and decodes every sample with librosa, as a naive
        # audio.length would).
        whole = {
            kind: measure(
                stack,
                closed_loop(
                    stack,
                    kind,
                    _audio_input(ctx.sources.url, LONG_WAV, "files-norange"),
                    bounds,
                ),
                name=f"{kind} {LONG_WAV}, {label}",
                engine=stack.engine,
                kind=kind,
            )
            for kind, label in (
                ("audio.length", "server ignores Range (full download)"),
                ("debug.audio_decode", "full download + librosa decode"),
            )
        }
        runs += [ctx.with_ratios(run) for run in whole.values()]
        full, naive = whole["audio.length"], whole["debug.audio_decode"]
    # The cheapest librosa decode (native rate, no resampling) is the baseline of the
    # target; librosa.load's default (resampled to 22.05 kHz, mono) is printed beside it.
    decode_ms = _librosa_decode_ms(files_dir / LONG_WAV, sr=None)
    default_decode_ms = _librosa_decode_ms(files_dir / LONG_WAV, sr=22050, repeats=3)
    task_ms = ranged["breakdown_ms"]["run"]["p50"]
    ranged["librosa_decode_ms"] = decode_ms
    ranged["librosa_default_decode_ms"] = default_decode_ms
    target(
        ranged,
        "librosa full decode (sr=None) / task running time (p50) >= 20",
        round(decode_ms / task_ms, 1) if task_ms else None,
        20,
        at_most=False,
    )
    full_tps, naive_tps = full["tasks_per_s"], naive["tasks_per_s"]
    target(
        ranged,
        "tasks/s with Range / tasks/s with full download and decode >= 10",
        round(ranged["tasks_per_s"] / naive_tps, 2)
        if naive_tps and ranged["tasks_per_s"]
        else None,
        10,
        at_most=False,
    )
    # Not a target: the service's own fallback (whole file, header read, no decode).
    ranged["vs_full_download_no_decode"] = (
        round(ranged["tasks_per_s"] / full_tps, 2) if full_tps and ranged["tasks_per_s"] else None
    )
    # The decode baseline: a worker that decoded the file with librosa per task could do at
    # most (worker processes x 1000 / decode ms) tasks/s, with no platform cost at all.
    decode_tps = round(WORKER_CONCURRENCY * 1000 / decode_ms, 2)
    ranged["vs_decode_bound"] = (
        round(ranged["tasks_per_s"] / decode_tps, 1) if ranged["tasks_per_s"] else None
    )
    note = (
        f"{LONG_WAV}: librosa.load(sr=None) in-process median {decode_ms:.0f} ms "
        f"(default sr=22050: {default_decode_ms:.0f} ms) "
        f"(bound on {WORKER_CONCURRENCY} processes: {decode_tps:g} tasks/s); service task "
        f"running p50 {fmt_ms(task_ms)} ms; tasks/s with Range {fmt_num(ranged['tasks_per_s'])}, "
        f"full download and decode {fmt_num(naive_tps)}, full download without decode (the "
        f"service's fallback) {fmt_num(full_tps)}; with Range / decode bound: "
        f"{ranged['vs_decode_bound']}x"
    )
    return {
        "runs": runs,
        "librosa_decode_ms": decode_ms,
        "librosa_default_decode_ms": default_decode_ms,
        "decode_bound_tasks_per_s": decode_tps,
        "note": note,
    }


def _write_files(files_dir: Path) -> list[str]:
    """WAV and MP3 tones of 30 s and 300 s in the fixture server's folder (kept if there)."""
    from audio_files import write_audio  # tests/unit, on sys.path through stack

    names = []
    for seconds in (30, 300):
        for fmt in ("WAV", "MP3"):
            name = f"tone-{seconds}s-44k-stereo.{fmt.lower()}"
            if not (files_dir / name).exists():
                write_audio(
                    files_dir / name,
                    seconds=seconds,
                    sample_rate=AUDIO_RATE,
                    channels=AUDIO_CHANNELS,
                    format=fmt,
                )
            names.append(name)
    return names


def _audio_input(base: str, name: str, where: str = "files") -> MakeInput:
    return lambda i: {"audio_url": f"{base}/{where}/{name}"}


def _librosa_decode_ms(path: Path, *, sr: int | None, repeats: int = 5) -> float:
    """Median wall time of librosa.load(path, sr=sr) in this process (after one warm call)."""
    import librosa

    librosa.load(path, sr=sr)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        librosa.load(path, sr=sr)
        times.append((time.perf_counter() - began) * 1000)
    return round(sorted(times)[len(times) // 2], 1)
