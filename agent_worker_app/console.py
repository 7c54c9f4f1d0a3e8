"""What the user sees while a run goes on: the injectable terminal, live progress, the log, and
the redaction that keeps secrets out of all of them.

rich (60-90 ms to import) is imported inside the methods that draw on a terminal: a run whose
stderr is a pipe or a file (CI, a script) never loads it."""

from __future__ import annotations

import base64
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from agent_worker_app import capped_log
from agent_worker_app.agents.base_agent import ProgressEvent
from agent_worker_app.engines.channel import Lines
from agent_worker_app.output_text import OUTPUT_MARK, clean_line

log = logging.getLogger("agent_worker")
MIN_SECRET_LEN = 8


def plain_wanted() -> bool:
    """NO_COLOR (https://no-color.org: set and not empty) or a dumb terminal: plain lines only,
    with no colour, spinner or box drawing, even on a terminal."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


@dataclass
class Env:
    """The process's streams, injectable so tests can capture everything. plain: no rich
    output (colour, live status, panels) even where a stream is a terminal."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    plain: bool = field(default_factory=plain_wanted)

    @property
    def rich_stdout(self) -> bool:
        """The report may be a rich panel: stdout is a terminal that wants one."""
        return self.stdout_tty and not self.plain

    @property
    def rich_stderr(self) -> bool:
        """Progress may be a live status line: stderr is a terminal that wants one."""
        return self.stderr_tty and not self.plain

    @property
    def stdout_tty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def stderr_tty(self) -> bool:
        return _isatty(self.stderr)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------ text from outside, made safe to show

_LETTER_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
}
# control (C0, DEL, C1), format (bidi overrides, zero-width), line and paragraph separators, and
# lone surrogates (the bytes of a name that is not UTF-8, kept by surrogateescape)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _unsafe(char: str) -> bool:
    import unicodedata  # only text that is not all printable gets this far

    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape_char(char: str) -> str:
    if char in _LETTER_ESCAPES:
        return _LETTER_ESCAPES[char]
    if "\udc80" <= char <= "\udcff":  # a byte that was not UTF-8: show that byte
        return f"\\{ord(char) - 0xDC00:03o}"
    return "".join(f"\\{byte:03o}" for byte in char.encode("utf-8", "surrogatepass"))


def escape_text(text: str) -> str:
    """Text from outside (agent output, error and warning messages, names inside them) made safe
    to show on a terminal or in a log: each control or format character (C0 and C1 controls, ESC,
    DEL, newline, tab, bidi overrides, zero-width characters, line separators) becomes a C escape
    (``\\n``, ``\\t``, ``\\033``, ``\\342\\200\\256``), so it can neither start a line of its own
    nor reach the terminal raw. A byte that is not UTF-8 is shown as its octal escape. Backslashes
    and quotes stay as they are: a message is read by people, not parsed back.

    The result is plain text, never markup: renderers that understand markup (rich) must still
    be given it as rich.text.Text.
    """
    if text.isprintable():  # the common case, checked at C speed
        return text
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def quote_name(name: str) -> str:
    """A file name shown as `git -c core.quotePath=false` shows it: as it is, unless it holds a
    control or format character, a backslash or a double quote; then in double quotes, C-style,
    with ``\\n`` ``\\t`` ``\\\\`` ``\\"`` and ``\\ooo`` (the octal of each UTF-8 byte) for the rest.

    Deliberately, printable non-ASCII characters stay readable (``dossier é/nom ü.txt``), where
    git's default (core.quotePath=true) escapes every byte above 0x7f: a UTF-8 name is the
    common case on today's terminals, and octal soup helps nobody read it. Unicode format
    characters (bidi overrides, zero-width joiners) are escaped even so, unlike git, because
    they can make a name look like another one. A name that was not valid UTF-8 (kept by git's
    reader through surrogateescape) shows its odd bytes in octal, as git would.
    """
    if '"' not in name and "\\" not in name and escape_text(name) == name:
        return name
    inner = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escape_text(inner)}"'


def mask(secret: str) -> str:
    """A secret shortened to its last 4 characters: sk-ant-…abcd."""
    prefix = "sk-ant-" if secret.startswith("sk-ant-") else ""
    return f"{prefix}\u2026{secret[-4:]}"


ENCODED_MIN_LEN = 16  # a secret this long has its encodings redacted too (shorter: too common)


def encodings(secret: str) -> list[tuple[str, str]]:
    """The forms a secret takes when something encodes it, each with what replaces it: base64
    (standard and URL-safe) at each of the three places it can start in the encoded bytes, hex
    (either case), and URL-encoding where that differs. A base64 form is the run of characters
    that only the secret's bytes decide, so it is found inside any longer encoded text."""
    raw = secret.encode()
    masked = mask(secret)
    found: dict[str, str] = {}
    for skip in range(3):  # the secret's first byte at offset 0, 1 or 2 of a 3-byte group
        encoded = base64.b64encode(b"\0" * skip + raw).decode()
        start = -(-skip * 8 // 6)  # the characters that hold a bit of the bytes before it
        end = (skip + len(raw)) * 8 // 6  # after this, the bits of the bytes after it
        form = encoded[start:end]
        found[form] = f"{masked}[base64]"
        found[form.replace("+", "-").replace("/", "_")] = f"{masked}[base64]"
    found[raw.hex()] = f"{masked}[hex]"
    found[raw.hex().upper()] = f"{masked}[hex]"
    quoted = urllib.parse.quote(secret, safe="")
    if quoted != secret:
        found[quoted] = f"{masked}[url]"
    return [(form, replacement) for form, replacement in found.items() if form != secret]


class Redactor:
    """Replaces every secret value in text or bytes with its masked form, and a long secret's
    encodings (base64, hex, URL-encoded) with that too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._needles: list[tuple[str, str]] = []  # (what to find, what replaces it)
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        # New lists, swapped in whole: tasks of a batch add their secrets from their own
        # threads while others redact (a list sorted in place looks empty meanwhile).
        known = list(self._secrets)
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LEN and secret not in known:
                known.append(secret)
        needles = {secret: mask(secret) for secret in known}
        for secret in known:
            if len(secret) >= ENCODED_MIN_LEN:
                for form, replacement in encodings(secret):
                    needles.setdefault(form, replacement)
        self._needles = sorted(needles.items(), key=lambda item: len(item[0]), reverse=True)
        self._secrets = sorted(known, key=len, reverse=True)

    @property
    def longest(self) -> int:
        """The longest form a secret can take in output (a line splitter keeps this much
        back, so that no form of it is ever cut in two)."""
        return len(self._needles[0][0]) if self._needles else 0

    def text(self, text: str) -> str:
        for needle, replacement in self._needles:
            if needle in text:
                text = text.replace(needle, replacement)
        return text

    def data(self, data: bytes) -> bytes:
        for needle, replacement in self._needles:
            raw = needle.encode()
            if raw in data:
                data = data.replace(raw, replacement.encode())
        return data


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        return True


class _ThreadFilter(logging.Filter):
    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


class RunLog:
    """The orchestrator's log: kept in memory until the run directory exists, then a file.
    With this_thread, only what the thread that made it logs (a batch's task, in its worker)."""

    def __init__(
        self, redactor: Redactor, *, debug: bool, stderr: IO[str], this_thread: bool = False
    ) -> None:
        self._memory: list[logging.LogRecord] = []
        self._filter = _RedactingFilter(redactor)
        self._thread = _ThreadFilter(threading.get_ident()) if this_thread else None
        self._handlers: list[logging.Handler] = []
        self.path: Path | None = None
        log.setLevel(logging.DEBUG)
        log.propagate = False
        self._keep = _ListHandler(self._memory)
        self._attach(self._keep)
        if debug:
            console = logging.StreamHandler(stderr)
            console.setFormatter(_TerminalFormatter("agent-worker: debug: %(message)s"))
            self._attach(console)

    def _attach(self, handler: logging.Handler) -> None:
        if self._thread is not None:
            handler.addFilter(self._thread)
        handler.addFilter(self._filter)
        log.addHandler(handler)
        self._handlers.append(handler)

    def to_file(self, path: Path, *, max_bytes: int = capped_log.DEFAULT_MAX) -> None:
        """Write what was logged so far to path, and everything after it too (up to max_bytes:
        at --debug it holds the container's output again)."""
        handler = capped_log.CappedHandler(path, max_bytes)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        for record in self._memory:
            handler.handle(record)
        log.removeHandler(self._keep)
        self._handlers.remove(self._keep)
        self._memory.clear()
        self._attach(handler)
        self.path = path

    def close(self) -> None:
        for handler in self._handlers:
            log.removeHandler(handler)
            handler.close()
        self._handlers.clear()


class _TerminalFormatter(logging.Formatter):
    """Log lines for a terminal: a message's control characters escaped, so one record is one
    line (a traceback keeps its own lines, each escaped)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return escape_text(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return "\n".join(escape_text(line) for line in super().formatException(ei).splitlines())


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ProgressSink(Protocol):
    """What a run tells the user as it goes (Progress; a batch's line for one task)."""

    def phase(self, text: str) -> None: ...

    def line(self, text: str, *, style: str = "") -> None: ...

    def build_line(self, text: str) -> None: ...

    def event(self, event: ProgressEvent) -> None: ...

    def note(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def close(self) -> None: ...


class _Status:
    """The live status line: what is happening and for how long (re-rendered as it runs)."""

    def __init__(self, start: float) -> None:
        self.text = ""
        self._start = start

    def __rich__(self) -> Any:
        from rich.text import Text  # plain text: a build line's brackets are not markup

        return Text.assemble(self.text, (f"  {time.monotonic() - self._start:.0f}s", "dim"))


class Progress:
    """Live progress on stderr: a rich status line on a terminal, timestamped lines otherwise."""

    def __init__(self, env: Env, redactor: Redactor) -> None:
        self._env = env
        self._redact = redactor.text
        self._start = time.monotonic()
        self._live: Any = None
        self._console: Any = None
        self._status = _Status(self._start)
        if env.rich_stderr:
            from rich.console import Console

            self._console = Console(file=env.stderr, highlight=False)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._start:6.1f}s"

    def _plain(self, text: str) -> None:
        self._env.stderr.write(text + "\n")
        self._env.stderr.flush()

    def _shown(self, text: str) -> str:
        """Secrets masked, then control characters escaped: what reaches the terminal or log."""
        return escape_text(self._redact(text))

    def phase(self, text: str) -> None:
        """A step of the run starts (building the image, starting the container...)."""
        self._status.text = self._shown(text)
        log.info(text)
        if self._console is None:
            self._plain(f"[{self._elapsed()}] {self._status.text}")
        elif self._live is None:
            from rich.status import Status

            self._live = Status(self._status, console=self._console)
            self._live.start()

    def line(self, text: str, *, style: str = "") -> None:
        """A line printed above the status (a tool call, a note)."""
        text = self._shown(text)
        if self._console is None:
            self._plain(f"[{self._elapsed()}]   {text}")
        else:
            from rich.text import Text

            self._console.print(Text(f"  {text}", style=style))

    def build_line(self, text: str) -> None:
        """A line of the image's build: its own lines ("image: ...", a layer or a setup
        command with its time; a pull's or a push's) stay; what the commands print
        (OUTPUT_MARK) only passes through the status line of a terminal (the build log keeps
        all of it)."""
        if not text.startswith(OUTPUT_MARK):
            self.line(text, style="dim")
        elif self._console is not None:
            shown = escape_text(self._redact(text.strip())[:60])
            self._status.text = f"Building the agent image: {shown}"

    def event(self, event: ProgressEvent) -> None:
        """A live event from the agent's output."""
        self.line(event.text, style={"tool": "cyan", "text": "dim"}.get(event.kind, ""))

    def note(self, text: str) -> None:
        """Something the user should know that went well (work recovered, ...)."""
        log.info(text)
        text = self._shown(text)
        if self._console is None:
            self._plain(f"agent-worker: {text}")
        else:
            from rich.text import Text

            self._console.print(Text(text, style="green"))

    def warn(self, text: str) -> None:
        log.warning(text)
        text = self._shown(text)
        if self._console is None:
            self._plain(f"agent-worker: warning: {text}")
        else:
            from rich.text import Text

            self._console.print(Text(f"warning: {text}", style="yellow"))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class AgentOutput:
    """The container's output: stdout to agent.jsonl and live progress events; stderr to
    container.log, with the agent's last lines kept. Nothing here decides how the run ends:
    the task's own account comes through its result channel, which its output cannot forge."""

    def __init__(
        self,
        run_dir: Path,
        parse_line: Callable[[str], ProgressEvent | None],
        progress: ProgressSink,
        redactor: Redactor,
        *,
        max_bytes: int = capped_log.DEFAULT_MAX,
    ) -> None:
        self._jsonl = capped_log.CappedFile(run_dir / "agent.jsonl", max_bytes)
        self._stderr = capped_log.CappedFile(run_dir / "container.log", max_bytes)
        self._parse_line = parse_line
        self._progress = progress
        self.stdout = Lines(self._out_line, redact=redactor.data, keep=redactor.longest)
        self.stderr = Lines(self._err_line, redact=redactor.data, keep=redactor.longest)
        self.tail: deque[str] = deque(maxlen=12)

    def _out_line(self, raw: bytes) -> None:
        self._jsonl.write(raw)
        event = self._parse_line(raw.decode("utf-8", "replace"))
        if event is not None:
            self._progress.event(event)

    def _err_line(self, raw: bytes) -> None:
        self._stderr.write(raw)
        text = raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
        if not show_own_line(self._progress, text) and text.strip():
            self.tail.append(text)
            log.debug("agent stderr: %s", text)

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()
        self._jsonl.close()
        self._stderr.close()

    @property
    def warnings(self) -> list[str]:
        """For the report: the logs that stopped at --max-log-size."""
        return [w for f in (self._jsonl, self._stderr) if (w := f.warning()) is not None]


def show_own_line(progress: ProgressSink, text: str) -> bool:
    """A line of a container's root stage ("agent-worker: ..."), shown as progress (a warning
    in yellow: reported from result.json too); its quotes of a command's output with their
    colours out, not escaped. False for any other line."""
    if not text.startswith(_OWN):
        return False
    text = clean_line(text).removeprefix(_OWN)
    if text.startswith(_WARNING):
        progress.line(text, style="yellow")
    else:
        progress.line(text, style="dim")
    return True


_OWN = "agent-worker: "
_WARNING = "warning: "
