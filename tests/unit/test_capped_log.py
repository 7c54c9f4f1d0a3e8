"""--max-log-size: a log stops at its cap, says so in its last line, and counts the rest; and
the disk watch's logic (the engine's side is tests/e2e/test_caps.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from agent_worker_app import capped_log
from agent_worker_app.engines.docker import disk_watch
from agent_worker_app.engines.docker.disk_watch import DiskWatch


def test_a_log_stops_at_its_cap_with_whole_lines_and_says_so(tmp_path: Path) -> None:
    log = capped_log.CappedFile(tmp_path / "agent.jsonl", 100)
    for _ in range(10):
        log.write(b"x" * 29 + b"\n")
    log.close()
    text = (tmp_path / "agent.jsonl").read_text()
    lines = text.splitlines()
    assert lines[:3] == ["x" * 29] * 3  # whole lines, none cut in two
    assert lines[-1].startswith("agent-worker: this log stopped at --max-log-size (100)")
    assert len(text) <= 100 + len(lines[-1]) + 2
    assert log.warning() == (
        "agent.jsonl stopped at --max-log-size (100); 210 more bytes were not written "
        "(the run went on)"
    )


def test_a_log_under_its_cap_is_whole_and_quiet(tmp_path: Path) -> None:
    with capped_log.CappedFile(tmp_path / "container.log", 1 << 20) as log:
        log.line("one")
        log.line("two")
    assert (tmp_path / "container.log").read_text() == "one\ntwo\n"
    assert log.warning() is None


def test_a_copied_log_keeps_its_first_bytes(tmp_path: Path) -> None:
    source = tmp_path / "build.log"
    source.write_bytes(b"step\n" * 100_000)
    capped_log.copy(source, tmp_path / "kept.log", 64 * 1024)
    kept = (tmp_path / "kept.log").read_bytes()
    assert kept.startswith(b"step\n" * 1000)
    assert b"stopped at --max-log-size (64k)" in kept
    assert len(kept) < 64 * 1024 + 200


def test_the_run_log_handler_stops_at_its_cap(tmp_path: Path) -> None:
    logger = logging.getLogger("test-capped-log")
    handler = capped_log.CappedHandler(tmp_path / "agent-worker.log", 1000)
    logger.addHandler(handler)
    try:
        for n in range(200):
            logger.warning("agent stderr: line %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "agent-worker.log").read_text()
    assert len(text) < 1100
    assert text.splitlines()[0] == "agent stderr: line 0"
    assert text.splitlines()[-1].startswith("agent-worker: this log stopped at --max-log-size")


def test_the_disk_watch_stops_a_task_past_its_cap_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_watch, "POLL_S", 0.01)
    sizes = iter([(10 << 20, True), (50 << 20, True), (150 << 20, True)])
    signals: list[str] = []
    watch = DiskWatch(100 << 20, lambda: next(sizes, (200 << 20, True)), signals.append)
    watch.start()
    for _ in range(500):
        if signals:
            break
        time.sleep(0.01)
    watch.stop()  # (it would kill the task if it did not end within the grace)
    watch.join(5)
    assert signals == ["SIGUSR1"]  # at once: the agent killed, its work saved
    assert watch.stopped is not None
    assert "passed --disk (100m; 150m seen)" in watch.stopped


def test_the_disk_watch_ends_with_its_task_and_stops_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(disk_watch, "POLL_S", 0.01)
    sizes = iter([(10, True), (20, False)])
    signals: list[str] = []
    watch = DiskWatch(100, lambda: next(sizes, None), signals.append)
    watch.start()
    watch.join(5)
    assert not watch.is_alive()
    assert (signals, watch.stopped) == ([], None)
    quiet = DiskWatch(100, lambda: (10, True), signals.append)
    quiet.start()
    time.sleep(0.05)
    quiet.stop()
    quiet.join(5)
    assert not quiet.is_alive()
    assert signals == []
