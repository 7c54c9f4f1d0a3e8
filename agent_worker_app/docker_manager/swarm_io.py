"""What crosses a Swarm service's boundary, which has neither stdin nor a file copy: the run's
inputs as pieces of two tar archives (configs for the task and the source, secrets for the nonce
and the credentials), and its output, read from the service's log, where the result files come
back framed with the nonce."""

from __future__ import annotations

import base64
import binascii
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from agent_worker_app.backend import FileEntry

# The engine refuses a config of 1,000 KiB or more and a secret of 500 KiB or more.
CONFIG_PIECE = 900_000
SECRET_PIECE = 480_000
SECRET_INPUTS = ("/agent-worker/nonce", "/agent-worker/secrets")
CONFIG_DIR = "/run/agent-worker-input"  # where the configs land (agent_inside.sh reads them)
SECRET_PREFIX = "agent-worker-input-"  # noqa: S105 (a file name: /run/secrets/<this><NNN>)
OUT_MARK = "agent-worker-out"  # agent_inside.sh's frame lines: "<mark> <nonce> <base64>"
RESULT_MARK = "agent-worker-result"
STDERR = 2


def split_inputs(inputs: list[FileEntry]) -> tuple[list[FileEntry], list[FileEntry]]:
    """(the inputs anyone with the manager's API may read, those only a secret may carry)."""
    public: list[FileEntry] = []
    private: list[FileEntry] = []
    for entry in inputs:
        secret = any(entry.path == p or entry.path.startswith(p + "/") for p in SECRET_INPUTS)
        (private if secret else public).append(entry)
    return public, private


def pieces(archive: IO[bytes], size: int) -> Iterator[bytes]:
    """The archive in pieces of at most size bytes; at least one piece."""
    first = True
    while (piece := archive.read(size)) or first:
        first = False
        yield piece


def nonce_of(inputs: list[FileEntry]) -> str:
    for entry in inputs:
        if entry.path == "/agent-worker/nonce" and isinstance(entry.data, bytes):
            return entry.data.decode()
    return ""


class ResultFrames:
    """The result files as the task prints them: base64 lines of a tar, each marked with the
    nonce, spooled to disk as they come."""

    def __init__(self, nonce: str) -> None:
        self.mark = f"{OUT_MARK} {nonce} ".encode() if nonce else None
        self.result_mark = f"{RESULT_MARK} {nonce} ".encode() if nonce else None
        self._spool: IO[bytes] | None = None
        self.broken = False

    def take(self, line: bytes) -> bool:
        """Keep line if it is a frame of this task's (True); others are output."""
        if self.mark is None or not line.startswith(self.mark):
            return False
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        try:
            self._spool.write(base64.b64decode(line[len(self.mark) :].strip(), validate=True))
        except (binascii.Error, ValueError):
            self.broken = True
        return True

    def extract(self, dest: Path) -> bool:
        """Unpack the files into dest; False when none came or they are not whole."""
        if self._spool is None or self.broken:
            return False
        self._spool.seek(0)
        try:
            with tarfile.open(fileobj=self._spool) as tar:
                dest.mkdir(parents=True, exist_ok=True)
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, OSError):
            return False
        return True

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class FramedStderr:
    """A task's stderr on its way to on_stderr, its frames taken out into frames. Whole lines
    pass at once, and so does the start of a line that cannot become a frame; the rest waits
    for its line's end. result: what the result line carries after its mark, once it came."""

    def __init__(self, frames: ResultFrames, on_stderr: Callable[[bytes], None]) -> None:
        self._frames = frames
        self._on_stderr = on_stderr
        self._pending = b""
        self.result: bytes | None = None

    @property
    def complete(self) -> bool:
        """The result line came, and with it every frame before it."""
        return self.result is not None

    def feed(self, data: bytes) -> None:
        pending = self._pending + data
        while (cut := pending.find(b"\n")) >= 0:
            line, pending = pending[: cut + 1], pending[cut + 1 :]
            if self._frames.take(line):
                continue
            result_mark = self._frames.result_mark
            if result_mark is not None and line.startswith(result_mark):
                self.result = line[len(result_mark) :].strip()
            self._on_stderr(line)
        if pending and not self._may_become_a_mark(pending):
            self._on_stderr(pending)  # neither a frame nor the result line: not held back
            pending = b""
        self._pending = pending

    def _may_become_a_mark(self, start: bytes) -> bool:
        marks = (self._frames.mark, self._frames.result_mark)
        return any(m is not None and m.startswith(start[: len(m)]) for m in marks)

    def end(self) -> None:
        """The stream ended: what is left of a line was never a whole frame."""
        if self._pending:
            self._on_stderr(self._pending)
            self._pending = b""


class LogStream:
    """A service's output, followed from its log on a thread of its own: stdout to one callback,
    stderr line by line to the other but for the result frames, which are kept. The follow never
    ends by itself: it is cut when the task's own last line (its result) arrived, or by stop()
    once the task ended.

    Whether it still runs is its own event, not Thread.is_alive(): a Thread.join() cut short by
    Ctrl-C marks a running thread as finished (CPython 3.11), and a swarm's log arrives after the
    task's end is known, so the result would be missed."""

    def __init__(
        self,
        open_log: Callable[[], tuple[Iterator[tuple[int, bytes]], Callable[[], None]]],
        frames: ResultFrames,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
    ) -> None:
        self._thread = threading.Thread(target=self.run, name="service-logs", daemon=True)
        self._finished = threading.Event()
        self._open_log = open_log
        self._frames = frames
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._close: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.error: BaseException | None = None
        self.ended = threading.Event()  # the task's result line arrived: all of its output did
        self.result_at: float | None = None  # when (time.monotonic())

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def stop(self) -> None:
        """Stop following (the task ended, or is gone)."""
        with self._lock:
            self._stopped = True
            if self._close is not None:
                self._close()

    def run(self) -> None:
        pending = b""
        try:
            messages, close = self._open_log()
            with self._lock:
                self._close = close
                if self._stopped:
                    close()
                    return
            for stream, data in messages:
                if stream != STDERR:
                    self._on_stdout(data)
                    continue
                pending += data
                while (cut := pending.find(b"\n")) >= 0:
                    line, pending = pending[: cut + 1], pending[cut + 1 :]
                    if self._frames.take(line):
                        continue
                    self._on_stderr(line)
                    mark = self._frames.result_mark
                    if mark is not None and line.startswith(mark):
                        self.result_at = time.monotonic()
                        self.ended.set()
                        return
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which reports it)
            if not self._stopped:
                self.error = exc
        finally:
            if pending and not self._frames.take(pending):
                self._on_stderr(pending)
            self.stop()
            self._finished.set()


def log_messages(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """The (stream, data) messages of a multiplexed log stream (an 8-byte header each: the
    stream, three zero bytes, the length), read whole from a file-like read(n)."""
    while len(header := read(8)) == 8:
        length = int.from_bytes(header[4:8], "big")
        data = read(length) if length else b""
        if len(data) < length:
            return
        yield header[0], data
