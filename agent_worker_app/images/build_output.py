"""A layer's build output, as a person wants it: Docker's step transcript ("Step 5/15 :",
"---> Running in ...", "Removing intermediate container ...") told apart from what the
Dockerfile's commands print, one timed line per setup command, and the failing command's own
last lines. Pure: images/build.py feeds it the engine's lines and says where they go."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent_worker_app.output_text import OUTPUT_MARK, clean_line, strip_ansi

STEP = re.compile(r"Step (\d+)/(\d+) :")
_TRANSCRIPT = re.compile(
    r"(?:Step \d+/\d+ :"
    r"|\s*---> "
    r"|Removing intermediate container "
    r"|Successfully built "
    r"|Successfully tagged "
    r")"
)
_CACHED = " ---> Using cache"
OUTPUT_KEPT = 40  # lines of a step's own output kept for its error
OUTPUT_SHOWN = 12  # of them, shown under a failure's message


def is_transcript(line: str) -> bool:
    """A line of Docker's own account of the build, not of a command it ran."""
    return bool(_TRANSCRIPT.match(line))


def shown_command(command: str, width: int = 80) -> str:
    """A setup command as one line of a message: its first line, shortened, in backticks."""
    first = command.strip().splitlines()[0] if command.strip() else ""
    more = len(command.strip().splitlines()) > 1 or len(first) > width
    return f"`{first[:width]}{' …' if more else ''}`"


def seconds(value: float) -> str:
    return f"{value:.1f} s"


@dataclass
class StepWatch:
    """Follows one layer's build line by line: which Dockerfile step runs, how long each setup
    command took (a line each on on_line once it ends), and the lines the current step printed.

    setup_steps: the Dockerfile step of each setup command (layers.Layer.setup_steps)."""

    layer: str
    setup: tuple[str, ...]
    setup_steps: tuple[int, ...]
    on_line: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    step: int = 0
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_KEPT))
    timings: list[tuple[str, float]] = field(default_factory=list)
    _started: float = 0.0
    _cached: bool = False
    _partial: str = ""

    def feed_text(self, text: str) -> None:
        """A piece of the engine's build stream, as it came: the engine sends each write of a
        command as it is (npm's "npm", then " ERR! notarget ...", each in the red it gives
        stderr), so the lines are put together here, the colour codes out first."""
        text = strip_ansi(text)
        if self._partial and is_transcript(text):  # Docker's own lines start a line
            self.flush()
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.feed(line)

    def flush(self) -> None:
        """The last line, if the stream did not end it."""
        partial, self._partial = self._partial, ""
        if partial:
            self.feed(partial)

    def feed(self, raw: str) -> None:
        """One line of the engine's build stream."""
        line = clean_line(raw)
        if not line.strip():
            return
        if match := STEP.match(line):
            self._end_step()
            self.step, self._started, self._cached = int(match.group(1)), self.clock(), False
            self.output.clear()
            return
        if line.startswith(_CACHED):
            self._cached = True
        if is_transcript(line):
            return
        self.output.append(line)
        self.on_line(OUTPUT_MARK + line)

    def finish(self) -> None:
        """The build ended well: the last setup command's line, if it was the last step."""
        self.flush()
        self._end_step()
        self.step = 0

    @property
    def setup_index(self) -> int | None:
        """The current step's setup command (0-based), None for another step."""
        return self.setup_steps.index(self.step) if self.step in self.setup_steps else None

    def _end_step(self) -> None:
        index = self.setup_index
        if index is None:
            return
        took = self.clock() - self._started
        self.timings.append((self.setup[index], took))
        cached = " (cached)" if self._cached else ""
        self.on_line(
            f"image: {self.layer}: setup {index + 1}/{len(self.setup)} "
            f"{shown_command(self.setup[index])} {seconds(took)}{cached}"
        )
