"""The container protocol, the host's half (agent_inside.sh is the other): what a task gets and
how what it leaves comes back, the same on every backend.

In: the run's input files (Inputs: where each lands, what only a secret may carry, the nonce),
as one tar archive on the container's stdin or as files, and the AW_* variables (task_env).
Out: the task's output on stdout and stderr; in its stderr, after every process of the agent is
gone, the result files as frames and last its result line, both marked with the run's nonce,
which only the task's root stage knows: nothing the agent prints can pass for them
(ResultReader, the one place they are recognised). Larger results stay in RESULT_DIR, copied
out of the stopped container where the engine can."""

from __future__ import annotations

import base64
import binascii
import io
import secrets
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent_worker_app.errors import EXIT_AGENT_FAILED, AgentWorkerError

# ---------------------------------------------------------------- in: the inputs

INPUT_DIR = "/agent-worker"
TASK = f"{INPUT_DIR}/task.md"
NONCE = f"{INPUT_DIR}/nonce"
SECRETS = f"{INPUT_DIR}/secrets"  # the agent's credentials, one file each
MAINTENANCE = f"{INPUT_DIR}/maintenance"  # the project's maintenance commands, one file each
CHECK = f"{INPUT_DIR}/check"
SESSION = f"{INPUT_DIR}/session"  # an earlier session's files, for --continue
SOURCE_PACK = f"{INPUT_DIR}/source.pack"  # the branch, where the engine cannot mount objects
SHALLOW = f"{INPUT_DIR}/shallow"
EXCLUDE = f"{INPUT_DIR}/exclude"
SECRET_INPUTS = (NONCE, SECRETS)  # only a secret may carry these where inputs are files

# ---------------------------------------------------------------- out: the results

RESULT_DIR = "/agent-worker/out"  # what the task leaves: result.bundle, agent-tail.jsonl
# The task's result line (marked with the nonce, as on stderr), kept in the container for a run
# that recovers a lost task: vouched() tells it from a line the task did not write.
ACCOUNT_FILE = "/run/agent-worker-result.json"
# The run's nonce in its run directory (readable by the user only): what recovers a lost run
# knows its result line and frames by it. Never in the task's reach.
NONCE_FILE = "nonce"
OUT_MARK = "agent-worker-out"  # a frame: "<mark> <nonce> <base64 of a piece of a tar>"
RESULT_MARK = "agent-worker-result"  # the result line: "<mark> <nonce> <base64 of JSON>"
OWN_DEADLINE_S = 10.0  # the task stops its agent itself this long after the run's timeout
MAX_LINE = 1 << 20  # a line longer than this is passed on in pieces
# The most a task's result files may come to, as the archive the host reads (--max-result-size):
# the host stops reading there, keeps the files that came whole, and the run fails saying so.
DEFAULT_MAX_RESULT = 1 << 30

# The variables the backends add: the inputs as files, not a tar on stdin (no stdin); the
# largest result that comes back framed in the output (larger: copied out).
INPUTS_FROM_FILES = {"AW_INPUTS": "files"}


def frame_max(size: int) -> dict[str, str]:
    return {"AW_FRAME_MAX": str(size)}


@dataclass(frozen=True)
class FileEntry:
    """A file (or, with data None, a directory) the task gets as input."""

    path: str
    data: bytes | Path | None
    mode: int = 0o644
    uid: int = 0


@dataclass(frozen=True)
class Inputs:
    """A task's input files, and the nonce that marks what it hands back (among the files, for
    its root stage; here, for the host to read its results by)."""

    files: tuple[FileEntry, ...]
    nonce: str

    def split(self) -> tuple[list[FileEntry], list[FileEntry]]:
        """(the files anyone with the engine's API may read, those only a secret may carry)."""
        public: list[FileEntry] = []
        private: list[FileEntry] = []
        for entry in self.files:
            secret = any(entry.path == p or entry.path.startswith(p + "/") for p in SECRET_INPUTS)
            (private if secret else public).append(entry)
        return public, private


def new_nonce() -> str:
    return secrets.token_hex(16)


def inputs(files: list[FileEntry], nonce: str) -> Inputs:
    """The inputs with the nonce among them, where the root stage reads it."""
    return Inputs((FileEntry(NONCE, nonce.encode(), 0o600), *files), nonce)


# The task's command: the container script under `bash -p` (no BASH_ENV or ENV file, no
# functions from the environment: root runs it), then the agent's argv.
COMMAND = ("/bin/bash", "-p", "/usr/local/bin/agent_inside.sh", "--")
# The check's own task (a fresh container on the branch's final commit): the same script, no
# agent; its result line is {"phase": "check", "error": ..., "check": ...}.
CHECK_COMMAND = ("/bin/bash", "-p", "/usr/local/bin/agent_inside.sh", "--check")
# The dynamic loader's variables that load or read code or data of the environment's choosing
# (from glibc's list of those it ignores for setuid programs; each ignored when empty): blank in
# the container's environment, whatever the image sets, so that root's first program loads as
# built; a project's own values reach the agent user (AW_KEEP_<NAME>, put back by the script).
LOADER_VARIABLES = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "LD_PROFILE",
    "LD_ORIGIN_PATH",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "MALLOC_TRACE",
)


def root_safe(env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment with the loader's variables blank (their values kept aside
    for the agent user)."""
    safe = dict(env)
    for name in LOADER_VARIABLES:
        if value := safe.pop(name, ""):
            safe[f"AW_KEEP_{name}"] = value
        safe[name] = ""
    return safe


def task_env(
    *,
    branch: str,
    base: str,
    object_format: str,
    firewall: bool,
    allow_hosts: list[str],
    timeout_s: float,
    session_dir: str,
) -> dict[str, str]:
    """The AW_* variables agent_inside.sh reads. The deadline is counted from the container's
    start (a node may first pull the image): the task stops its agent by itself then, even with
    no agent-worker left to do it."""
    return {
        "AW_BRANCH": branch,
        "AW_BASE": base,
        "AW_OBJECT_FORMAT": object_format,
        "AW_FIREWALL": "1" if firewall else "0",
        "AW_ALLOW_HOSTS": ",".join(allow_hosts),
        "AW_DEADLINE_AFTER": str(int(timeout_s + OWN_DEADLINE_S)),
        "AW_SESSION_DIR": session_dir,
    }


def files_tar(files: list[FileEntry] | tuple[FileEntry, ...]) -> IO[bytes]:
    """A tar of input files, spooled to disk (a repository's pack can be large)."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for entry in files:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.uid
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(entry.data, Path):
                info.size = entry.data.stat().st_size
                with entry.data.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    spool.seek(0)
    return spool


# ---------------------------------------------------------------- out: the streams


class Demux:
    """Docker's multiplexed stream (a container's attach, a service's log): frames of an 8-byte
    header (the stream: 1 stdout, 2 stderr; three zero bytes; the length) and their data,
    parsed from chunks however they are cut; a large frame comes out in pieces as it arrives."""

    def __init__(self) -> None:
        self._header = b""  # the start of a header cut between two chunks
        self._stream = 1
        self._left = 0

    def wanted(self) -> int:
        """How many bytes end the current header or frame: what a reader whose read(n) waits
        for all n bytes asks for."""
        return self._left or 8 - len(self._header)

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        if self._header:
            chunk, self._header = self._header + chunk, b""
        at, end = 0, len(chunk)
        while at < end:
            if self._left == 0:
                if end - at < 8:
                    self._header = chunk[at:]
                    return
                self._stream = chunk[at]
                self._left = int.from_bytes(chunk[at + 4 : at + 8], "big")
                at += 8
                if self._left == 0:
                    yield self._stream, b""
                continue
            take = min(self._left, end - at)
            yield self._stream, chunk[at : at + take]
            at, self._left = at + take, self._left - take


class Lines:
    """Bytes in, lines (with their newline) out: split on bytes, before any decoding, so a
    character cut between chunks is whole again. A line longer than max_line is passed on in
    pieces, its last keep-1 bytes kept back so that redact sees a secret whole. With hold, the
    start of a line is passed on at once unless hold says it may become one to see whole."""

    def __init__(
        self,
        on_line: Callable[[bytes], None],
        *,
        redact: Callable[[bytes], bytes] = lambda data: data,
        keep: int = 0,
        max_line: int = MAX_LINE,
        hold: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._on_line = on_line
        self._redact = redact
        self._keep = max(keep - 1, 0)
        self._max = max_line
        self._hold = hold

    def feed(self, data: bytes) -> None:
        scan_from = len(self._buf)
        self._buf += data
        start = 0
        while (end := self._buf.find(b"\n", max(start, scan_from))) >= 0:
            self._on_line(self._redact(bytes(self._buf[start : end + 1])))
            start = end + 1
        if start:
            del self._buf[:start]
        if self._hold is not None and self._buf and not self._hold(bytes(self._buf)):
            self._on_line(self._redact(bytes(self._buf)))
            self._buf.clear()
        if len(self._buf) > self._max:
            self._buf = bytearray(self._redact(bytes(self._buf)))
            cut = len(self._buf) - self._keep  # the rest may be the start of a secret
            if cut > 0:
                self._on_line(bytes(self._buf[:cut]))
                del self._buf[:cut]

    def close(self) -> None:
        if self._buf:
            self._on_line(self._redact(bytes(self._buf)))
            self._buf.clear()


class ResultTooLargeError(AgentWorkerError):
    """The task's result passed --max-result-size: what came whole before the cap is kept."""

    exit_code = EXIT_AGENT_FAILED

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the container's result passed --max-result-size ({size_text(limit)}); agent-worker "
            "stopped reading it there (raise --max-result-size or AGENT_WORKER_MAX_RESULT_SIZE "
            "to bring back a larger result)"
        )
        self.limit = limit


def size_text(size: int) -> str:
    """A size as the options take it: 512m, 1g, 1048576."""
    for unit, scale in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


class Capped:
    """Writes into a file up to limit bytes: the write that would pass it writes what fits and
    raises ResultTooLargeError, so that a reader stops there (never reads all, then checks)."""

    def __init__(self, into: IO[bytes], limit: int) -> None:
        self._into = into
        self._room = limit
        self.limit = limit

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._into.write(data[: self._room])
            self._room = 0
            raise ResultTooLargeError(self.limit)
        self._room -= len(data)
        return self._into.write(data)


def extract_results(archive: IO[bytes], dest: Path, *, end: int | None = None) -> None:
    """Unpack what a task left (a tar, maybe cut short at a cap: its first end bytes, all of
    it by default): its regular files and directories that came whole, and nothing else. A link
    (a symlink, absolute or not, or a hard link) or a device the agent left in the output is
    skipped, never fatal: the rest of a good run is kept."""
    size = archive.seek(0, io.SEEK_END)
    cut, end = end is not None, size if end is None else min(end, size)
    archive.seek(0)

    def whole(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if member.offset_data + member.size > end or member.issparse():
            return None  # cut short at the cap (or stored sparse: larger than it says)
        return _results_only(member, path)

    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            tar.extractall(dest, filter=whole)  # noqa: S202 (files and directories in dest only)
    except tarfile.ReadError:
        if not cut:  # a broken archive is the caller's to report; a cut one is what it is
            raise


def _results_only(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    if not (member.isfile() or member.isdir()):
        return None
    try:
        return tarfile.data_filter(member, path)
    except tarfile.FilterError:  # a name outside dest: not a result
        return None


class ResultFrames:
    """The result files as the task prints them: base64 lines of a tar, each marked with the
    nonce, spooled to disk as they come, up to max_bytes (past it, over is set and the rest is
    dropped: what came whole before is still kept)."""

    def __init__(self, nonce: str, max_bytes: int = DEFAULT_MAX_RESULT) -> None:
        self.mark = f"{OUT_MARK} {nonce} ".encode() if nonce else None
        self._spool: IO[bytes] | None = None
        self._room = self.limit = max_bytes
        self.broken = False
        self.over = False

    def take(self, line: bytes) -> bool:
        """Keep line if it is a frame of this task's (True); others are output."""
        if self.mark is None or not line.startswith(self.mark):
            return False
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        if self.over:
            return True
        try:
            data = base64.b64decode(line[len(self.mark) :].strip(), validate=True)
        except (binascii.Error, ValueError):
            self.broken = True
            return True
        if len(data) > self._room:
            data, self.over = data[: self._room], True
        self._room -= len(data)
        self._spool.write(data)
        return True

    def extract(self, dest: Path, max_bytes: int | None = None) -> bool:
        """Unpack the files into dest; False when none came or they are not whole. Over the cap
        (the spool's, or max_bytes): what came whole before it is unpacked, then
        ResultTooLargeError."""
        if self._spool is None or self.broken:
            return False
        size = self._spool.seek(0, io.SEEK_END)
        limit = self.limit if max_bytes is None else min(self.limit, max_bytes)
        over = self.over or size > limit
        try:
            dest.mkdir(parents=True, exist_ok=True)
            extract_results(self._spool, dest, end=limit if over else None)
        except (tarfile.TarError, OSError):
            return False
        if over:
            raise ResultTooLargeError(limit)
        return True

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class ResultReader:
    """A task's stderr on its way to on_stderr, with what belongs to the protocol taken out:
    the result frames (kept in frames) and the result line (kept in result). Other lines pass
    at once, and so does the start of a line that cannot become a frame or the result line;
    the rest waits for its line's end."""

    def __init__(
        self,
        nonce: str,
        on_stderr: Callable[[bytes], None],
        *,
        max_bytes: int = DEFAULT_MAX_RESULT,
    ) -> None:
        self.frames = ResultFrames(nonce, max_bytes)
        self._result_mark = f"{RESULT_MARK} {nonce} ".encode() if nonce else None
        self._marks = [m for m in (self.frames.mark, self._result_mark) if m is not None]
        self._on_stderr = on_stderr
        self._lines = Lines(self._line, hold=self._may_become_a_mark)
        self._result: bytes | None = None

    @property
    def complete(self) -> bool:
        """The result line came, and with it every frame before it."""
        return self._result is not None

    @property
    def result(self) -> str | None:
        """The result line's JSON text (None: it did not come, or is not base64 of UTF-8)."""
        if self._result is None:
            return None
        try:
            return base64.b64decode(self._result, validate=True).decode()
        except (binascii.Error, ValueError):
            return None

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def end(self) -> None:
        """The stream ended: what is left of a line was never a whole frame."""
        self._lines.close()

    def _line(self, line: bytes) -> None:
        if self.frames.take(line):
            return
        if self._result_mark is not None and line.startswith(self._result_mark):
            self._result = line[len(self._result_mark) :].strip()
            return
        self._on_stderr(line)

    def _may_become_a_mark(self, start: bytes) -> bool:
        return any(m.startswith(start[: len(m)]) for m in self._marks)


def result_line(nonce: str, text: str) -> str:
    """A result line as the task writes it (agent_inside.sh): text, marked with the nonce."""
    return f"{RESULT_MARK} {nonce} {base64.b64encode(text.encode()).decode()}\n"


def vouched(data: bytes, nonce: str) -> str | None:
    """The JSON text of the result line in data (a task's account, kept for recovery) when it
    is marked with this nonce; None for anything else (another nonce, no mark, bare JSON)."""
    reader = ResultReader(nonce, lambda line: None)  # only the result line matters
    reader.feed(data)
    reader.end()
    return reader.result
