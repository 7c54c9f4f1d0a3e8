"""What crosses a Swarm service's boundary, which has neither stdin nor a file copy: the run's
inputs as pieces of two tar archives (configs for the task and the source, secrets for what
channel.Inputs.split says only a secret may carry), and its output, read from the service's
log, where the result comes back as channel.py's frames and result line."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from agent_worker_app.engines.channel import Demux, ResultReader

# The engine refuses a config of 1,000 KiB or more and a secret of 500 KiB or more.
CONFIG_PIECE = 900_000
SECRET_PIECE = 480_000
CONFIG_DIR = "/run/agent-worker-input"  # where the configs land (agent_inside.sh reads them)
SECRET_PREFIX = "agent-worker-input-"  # noqa: S105 (a file name: /run/secrets/<this><NNN>)
STDERR = 2
POLL_S = 0.5  # the longest pause between two looks at a task's state
FIRST_POLL_S = 0.05  # the first: a task's next state (started, ended) often comes that soon
ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}  # a task's end


def pauses() -> Iterator[float]:
    """The pauses between looks at a state that may change at once or in minutes: short at
    first, each half as long again as the one before, POLL_S at most."""
    pause = FIRST_POLL_S
    while True:
        yield pause
        pause = min(pause * 1.5, POLL_S)


def pieces(archive: IO[bytes], size: int) -> Iterator[bytes]:
    """The archive in pieces of at most size bytes; at least one piece."""
    first = True
    while (piece := archive.read(size)) or first:
        first = False
        yield piece


class LogStream:
    """A service's output, followed from its log on a thread of its own: stdout to one callback,
    stderr through reader (channel.ResultReader, which keeps the result frames and line) to the
    other. The follow never ends by itself: it is cut when the task's own last line (its result)
    arrived, or by stop() once the task ended.

    Whether it still runs is its own event, not Thread.is_alive(): a Thread.join() cut short by
    Ctrl-C marks a running thread as finished (CPython 3.11), and a swarm's log arrives after the
    task's end is known, so the result would be missed."""

    def __init__(
        self,
        open_log: Callable[[], tuple[Iterator[tuple[int, bytes]], Callable[[], None]]],
        reader: ResultReader,
        on_stdout: Callable[[bytes], None],
    ) -> None:
        self._thread = threading.Thread(target=self.run, name="service-logs", daemon=True)
        self._finished = threading.Event()
        self._open_log = open_log
        self.reader = reader
        self._on_stdout = on_stdout
        self._close: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.error: BaseException | None = None
        self.ended = threading.Event()  # the task's result line arrived: all of its output did
        self.result_at: float | None = None  # when (time.monotonic())

    @property
    def result(self) -> str | None:
        return self.reader.result

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return not self._finished.is_set()

    def network_record(self) -> dict[str, Any] | None:
        return None  # the task's root holds its network: its result line says what it recorded

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def stop(self) -> None:
        """Stop following (the task ended, or is gone)."""
        with self._lock:
            self._stopped = True
            if self._close is not None:
                self._close()

    def run(self) -> None:
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
                self.reader.feed(data)
                if self.reader.complete:
                    self.result_at = time.monotonic()
                    self.ended.set()
                    return
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which reports it)
            if not self._stopped:
                self.error = exc
        finally:
            self.reader.end()
            self.stop()
            self._finished.set()


def log_messages(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """The (stream, data) messages of a service's log (Docker's multiplexed stream) from a
    file-like read(n) that waits for all n bytes (urllib3's, which takes the HTTP chunks
    apart): each read asks for what ends the current header or message."""
    demux = Demux()
    while len(chunk := read(wanted := demux.wanted())) == wanted:  # short: the log's end
        yield from demux.feed(chunk)
