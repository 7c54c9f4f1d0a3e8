"""The container's own disk, watched where the engine cannot cap it (--storage-opt size needs
overlay2 on xfs with pquota): its writable layer's size, asked of the engine every second;
past --disk, the task is stopped at once (SIGUSR1: its agent is killed, not asked to stop, and
its work then committed and bundled as at a timeout), and killed if it does not end."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent_worker_app.engines.base import GRACE_S
from agent_worker_app.engines.channel import size_text

POLL_S = 1.0  # how often the engine is asked (it walks the layer: cheap for a few files)


class DiskWatch(threading.Thread):
    """Stops a task whose writable layer passes limit bytes; stopped says why, once it did."""

    def __init__(
        self,
        limit: int,
        used: Callable[[], tuple[int, bool] | None],
        signal: Callable[[str], None],
    ) -> None:
        super().__init__(name="disk-watch", daemon=True)
        self._limit = limit
        self._used = used
        self._signal = signal
        self._done = threading.Event()
        self.stopped: str | None = None

    def run(self) -> None:
        while not self._done.wait(POLL_S):
            seen = self._used()
            if seen is None or not seen[1]:  # gone, or ended
                return
            if seen[0] > self._limit:
                self.stopped = (
                    f"the container's own files (outside /workspace) passed --disk "
                    f"({size_text(self._limit)}; {seen[0] / (1 << 20):,.0f}m seen): stopped (raise "
                    "--disk or AGENT_WORKER_DISK if the task needs more)"
                )
                self._signal("SIGUSR1")
                if not self._done.wait(GRACE_S):
                    self._signal("SIGKILL")
                return

    def stop(self) -> None:
        self._done.set()
