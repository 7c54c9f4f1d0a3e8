"""A container's standard streams over an attach socket (Docker's multiplexed stream), with the
tar of the run's inputs going in on its stdin: the standard library only, over whichever
transport api.EngineAPI attached through (a unix or TCP socket, TLS, ssh's socket pair)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from agent_worker_app.engines.channel import Demux, FileEntry, ResultReader, files_tar

STDOUT = 1


class ContainerIO(threading.Thread):
    """The container's standard streams, attached before it starts (a late attach misses what
    it prints first). The run's input files go in on stdin as one tar archive, which also keeps
    secrets out of the container's configuration and spares an archive upload (about 50 ms);
    stdout and stderr go to the callbacks until the container ends.

    Whether it still runs is its own event, not Thread.is_alive(): a Thread.join() cut short by
    Ctrl-C marks a running thread as finished (CPython 3.11), and the result line that follows
    the stop would be missed."""

    def __init__(
        self,
        attach: socket.socket,
        files: list[FileEntry] | tuple[FileEntry, ...],
        on_stdout: Callable[[bytes], None],
        reader: ResultReader,
    ) -> None:
        """attach: the container's attach socket (a socket, or an SSL socket), made before the
        container starts; it is this object's now. stderr goes through reader on its way on:
        what the task hands back is taken out there."""
        super().__init__(name="container-io", daemon=True)
        self._finished = threading.Event()
        self.reader = reader
        self._on_stdout = on_stdout
        self.error: BaseException | None = None
        self._socket = attach
        try:
            self._input = files_tar(files)
        except BaseException:
            with suppress(OSError):
                attach.close()
            raise

    @property
    def result(self) -> str | None:
        """The task's result line (channel.ResultReader), once it came."""
        return self.reader.result

    def is_alive(self) -> bool:
        return self.ident is not None and not self._finished.is_set()

    def network_record(self) -> dict[str, Any] | None:
        return None  # the task's root holds its network: its result line says what it recorded

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def close(self) -> None:
        """Let go of the input and the attach of a container that never started."""
        self._input.close()
        with suppress(OSError):
            self._socket.close()

    def _send(self, raw: socket.socket) -> None:
        try:
            while chunk := self._input.read(1 << 16):
                raw.sendall(chunk)
            # No end of input: the container's tar stops at the archive's end marker, and the
            # rest of its stdin stays open for as long as this process holds the attach. Its
            # end tells the container that agent-worker is gone (killed, its host asleep), and
            # the container then stops the agent by itself. (On TLS a half-close would also
            # drop TLS itself, and the output would arrive as ciphertext.)
        except OSError as exc:
            self.error = self.error or exc

    def run(self) -> None:
        raw = self._socket
        sender = None
        try:
            raw.settimeout(None)  # an agent may well be silent for longer than the API timeout
            if type(raw) is socket.socket:
                sender = threading.Thread(
                    target=self._send, args=(raw,), name="container-stdin", daemon=True
                )
                sender.start()
            else:  # TLS: one connection is never read and written by two threads at once; the
                self._send(raw)  # container prints nothing before it has read its input
            for stream, data in frames(raw):
                (self._on_stdout if stream == STDOUT else self.reader.feed)(data)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which reports it)
            self.error = self.error or exc
        finally:
            if sender is not None:
                sender.join(5.0)
            self._input.close()
            with suppress(OSError):
                self._socket.close()
            self.reader.end()
            self._finished.set()


def frames(raw: socket.socket) -> Iterator[tuple[int, bytes]]:
    """The (stream, data) frames of a non-TTY attach stream, as they arrive (a large frame in
    pieces). Read straight from the socket: a poll() before each read, as docker-py does, waits
    for the network while the TLS layer may already hold the rest of a record."""
    demux = Demux()
    while chunk := raw.recv(1 << 16):
        yield from ((stream, data) for stream, data in demux.feed(chunk) if data)
