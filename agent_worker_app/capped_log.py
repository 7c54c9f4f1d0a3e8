"""Logs that stop growing at --max-log-size: an agent printing gigabytes, a setup command's
endless output, must not fill the user's disk. Past the cap a log's last line says so, the rest
is counted, not written, and the run goes on (its report warns)."""

from __future__ import annotations

import logging
from pathlib import Path

from agent_worker_app.engines.channel import size_text

DEFAULT_MAX = 256 << 20


def note(max_bytes: int) -> str:
    return (
        f"agent-worker: this log stopped at --max-log-size ({size_text(max_bytes)}): "
        "the rest was not written"
    )


class CappedFile:
    """A log file of at most max_bytes (and its last line); whole writes only, so a line is
    never cut in two."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file = path.open("wb")
        self._room = max_bytes
        self.dropped = 0  # bytes not written

    def write(self, data: bytes) -> None:
        if not self.dropped and len(data) <= self._room:
            self._room -= len(data)
            self._file.write(data)
            return
        if not self.dropped:
            self._file.write(f"\n{note(self.max_bytes)}\n".encode())
            self._file.flush()
        self.dropped += len(data)

    def warning(self) -> str | None:
        """What the report says of a log that stopped; None for one that did not."""
        if not self.dropped:
            return None
        return (
            f"{self.path.name} stopped at --max-log-size ({size_text(self.max_bytes)}); "
            f"{size_text(self.dropped)} more bytes were not written (the run went on)"
        )

    def line(self, text: str) -> None:
        self.write(f"{text}\n".encode())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy(source: Path, dest: Path, max_bytes: int = DEFAULT_MAX) -> None:
    """source into dest, its first max_bytes only (a build's log, written elsewhere)."""
    out = CappedFile(dest, max_bytes)
    try:
        with source.open("rb") as data:
            while piece := data.read(1 << 16):
                out.write(piece)
                if out.dropped:
                    break
    finally:
        out.close()


class CappedHandler(logging.FileHandler):
    """A logging file handler that stops at max_bytes (of text), its last line saying so."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX) -> None:
        super().__init__(path, encoding="utf-8")
        self._room = max_bytes
        self._max = max_bytes
        self._full = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._full:
            return
        try:
            size = len(self.format(record)) + 1
        except Exception:  # noqa: BLE001 (logging's own way: handleError reports it)
            self.handleError(record)
            return
        if size > self._room:
            self._full = True
            if self.stream is not None:
                self.stream.write(f"{note(self._max)}\n")
                self.flush()
            return
        self._room -= size
        super().emit(record)
