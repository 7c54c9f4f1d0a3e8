"""console.py: bytes split into lines, secrets masked everywhere, agent output and the run log."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from agent_worker_app.agents.claude_agent import ClaudeParser
from agent_worker_app.console import (
    AgentOutput,
    Env,
    Progress,
    Redactor,
    RunLog,
    escape_text,
    mask,
    quote_name,
)
from agent_worker_app.engines.channel import Lines
from conftest import git

SECRET = "sk-ant-api03-Zq8mWx4LkPz0aBcD1eF2gH3iJ"
MASKED = "sk-ant-\u2026H3iJ"


class Collector:
    """Everything a Lines passes on, piece by piece."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def __call__(self, piece: bytes) -> None:
        self.pieces.append(piece)

    @property
    def joined(self) -> bytes:
        return b"".join(self.pieces)


def splitter(redactor: Redactor | None = None, **kw: int) -> tuple[Lines, Collector]:
    redactor = redactor or Redactor()
    out = Collector()
    kw.setdefault("keep", redactor.longest)
    return Lines(out, redact=redactor.data, **kw), out


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------- mask and Redactor


def test_mask_keeps_the_prefix_and_the_last_four_characters() -> None:
    assert mask(SECRET) == MASKED
    assert mask("sk-ant-api03-abcd") == "sk-ant-\u2026abcd"
    assert mask("plain-token-5678") == "\u20265678"
    assert SECRET[:-4] not in mask(SECRET)


def test_redactor_masks_text_and_bytes() -> None:
    redactor = Redactor([SECRET])
    text = f"key={SECRET}; again {SECRET}\n"
    assert redactor.text(text) == f"key={MASKED}; again {MASKED}\n"
    data = f"é {SECRET} é".encode()
    assert redactor.data(data) == f"é {MASKED} é".encode()
    assert redactor.text("nothing to hide") == "nothing to hide"
    assert redactor.data(b"\xff\x00 raw") == b"\xff\x00 raw"


def test_redactor_ignores_secrets_shorter_than_eight_characters() -> None:
    redactor = Redactor(["1234567", "", "abcdefgh"])
    assert redactor.text("1234567 abcdefgh") == "1234567 \u2026efgh"
    assert redactor.data(b"1234567 abcdefgh") == "1234567 \u2026efgh".encode()
    assert redactor.longest == 8
    assert Redactor(["short"]).longest == 0


def test_redactor_replaces_the_longest_secret_first() -> None:
    inner = "api03-Zq8mWx4Lk"  # a secret that is part of a longer one
    for order in ([inner, SECRET], [SECRET, inner]):
        redactor = Redactor(order)
        assert redactor.text(f"a {SECRET} b") == f"a {MASKED} b"
        assert redactor.data(f"a {SECRET} b".encode()) == f"a {MASKED} b".encode()
        assert redactor.text(f"a {inner} b") == f"a {mask(inner)} b"
    later = Redactor([inner])
    later.add(SECRET, SECRET)
    assert later.text(SECRET) == MASKED
    assert later.longest == len(SECRET.encode().hex())  # its longest form: hex
    assert Redactor(["abcdefgh"]).longest == 8  # too short to have its encodings redacted


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b'{"key": "'])
@pytest.mark.parametrize("suffix", [b"", b"z", b'"}\n'])
def test_the_secrets_encodings_are_redacted_wherever_they_start(
    prefix: bytes, suffix: bytes
) -> None:
    """base64 of anything that holds the secret (each of the three alignments, standard and
    URL-safe), hex and URL-encoding: no form of it survives into what is written or shown."""
    redactor = Redactor([SECRET])
    whole = prefix + SECRET.encode() + suffix
    for encoded in (
        base64.b64encode(whole).decode(),
        base64.urlsafe_b64encode(whole).decode(),
        whole.hex(),
        whole.hex().upper(),
    ):
        shown = redactor.text(f"sent {encoded} to the log")
        assert encoded not in shown
        assert MASKED in shown
        assert redactor.data(encoded.encode()) != encoded.encode()
    quoted = urllib.parse.quote(SECRET + "/?&=", safe="")
    assert redactor.text(quoted).startswith(MASKED)
    token = "gw-token+Zq8mWx4LkPz0/aBcD1eF2gH3iJ="  # a gateway's token, URL-encoded in a query
    assert Redactor([token]).text(urllib.parse.quote(token, safe="")) == f"{mask(token)}[url]"


# ---------------------------------------------------------------- Lines


def test_a_character_split_across_feeds_arrives_whole() -> None:
    data = "héllo wörld €\n".encode()
    euro = data.index("€".encode())
    for cut in (2, euro + 1, euro + 2):
        split, out = splitter()
        split.feed(data[:cut])
        assert out.pieces == []
        split.feed(data[cut:])
        assert out.pieces == [data]
        assert out.pieces[0].decode("utf-8") == "héllo wörld €\n"


def test_many_lines_in_one_chunk_and_a_partial_one_kept() -> None:
    split, out = splitter()
    split.feed(b"one\ntwo\n\nthree\nfou")
    assert out.pieces == [b"one\n", b"two\n", b"\n", b"three\n"]
    split.feed(b"r\nfive")
    assert out.pieces[-1] == b"four\n"
    split.close()
    assert out.pieces == [b"one\n", b"two\n", b"\n", b"three\n", b"four\n", b"five"]
    split.close()
    assert len(out.pieces) == 6  # a second close passes on nothing more


def test_close_with_nothing_buffered_passes_nothing() -> None:
    split, out = splitter()
    split.feed(b"whole\n")
    split.close()
    assert out.pieces == [b"whole\n"]


@pytest.mark.parametrize("size", [1, 3, 7, 10, 64])
def test_a_long_line_is_passed_on_in_pieces(size: int) -> None:
    line = bytes(range(33, 127)) * 3  # 282 bytes, no newline
    data = line + b"\nnext\n"
    split, out = splitter(max_line=10)
    for chunk in chunks(data, size):
        split.feed(chunk)
    split.close()
    assert out.joined == data
    assert len(out.pieces) > 2
    assert out.pieces[-1] == b"next\n"
    # nothing is held back much beyond the limit
    assert max(len(p) for p in out.pieces) <= 10 + size


def test_a_long_multibyte_line_joins_back_exactly() -> None:
    data = ("€ü" * 50 + "\n").encode()
    split, out = splitter(max_line=7)
    for chunk in chunks(data, 5):
        split.feed(chunk)
    split.close()
    assert out.joined == data
    assert out.joined.decode("utf-8") == "€ü" * 50 + "\n"


def secret_stream() -> bytes:
    return (
        f'{{"key": "{SECRET}"}}\nx{SECRET}{SECRET}y and a long tail {"z" * 30}{SECRET}\n{SECRET}'
    ).encode()


def split_all(redactor: Redactor, data: bytes, *, size: int, max_line: int) -> Collector:
    split, out = splitter(redactor, max_line=max_line)
    for chunk in chunks(data, size):
        split.feed(chunk)
    split.close()
    return out


@pytest.mark.parametrize("max_line", [len(SECRET), len(SECRET) + 3, 64, 1024])
@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_a_secret_never_survives_chunk_or_line_cuts(max_line: int, size: int) -> None:
    redactor = Redactor([SECRET])
    data = secret_stream()
    out = split_all(redactor, data, size=size, max_line=max_line)
    assert SECRET.encode() not in out.joined
    for piece in out.pieces:
        assert SECRET.encode() not in piece
    assert out.joined == redactor.data(data)
    assert out.joined.count(MASKED.encode()) == 5


def test_a_secret_at_every_offset_of_a_cut_is_masked() -> None:
    redactor = Redactor([SECRET])
    max_line = len(SECRET) + 2
    for offset in range(max_line + 2):
        data = b"." * offset + SECRET.encode() + b"." * 5
        out = split_all(redactor, data, size=1, max_line=max_line)
        assert SECRET.encode() not in out.joined, offset
        assert out.joined == redactor.data(data), offset


@pytest.mark.parametrize("max_line", [4, 8, 16, 24])
def test_a_secret_longer_than_max_line_is_still_masked(max_line: int) -> None:
    redactor = Redactor([SECRET])
    data = secret_stream()
    out = split_all(redactor, data, size=1, max_line=max_line)
    assert SECRET.encode() not in out.joined
    assert out.joined == redactor.data(data)


def test_every_line_is_redacted_before_it_is_passed_on() -> None:
    redactor = Redactor([SECRET])
    split, out = splitter(redactor)
    split.feed(f"a {SECRET[:10]}".encode())
    split.feed(f"{SECRET[10:]} b\nsecond {SECRET}".encode())
    assert out.pieces == [f"a {MASKED} b\n".encode()]
    split.close()
    assert out.pieces[-1] == f"second {MASKED}".encode()


# ---------------------------------------------------------------- AgentOutput


def make_progress(redactor: Redactor) -> tuple[Progress, io.StringIO]:
    stderr = io.StringIO()
    return Progress(Env(stdout=io.StringIO(), stderr=stderr), redactor), stderr


def tool_line(name: str, args: dict[str, str]) -> str:
    block = {"type": "tool_use", "id": "t1", "name": name, "input": args}
    return json.dumps({"type": "assistant", "message": {"content": [block]}}) + "\n"


def test_agent_output_writes_stdout_exactly_after_redaction(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    progress, progress_err = make_progress(redactor)
    seen: list[str] = []

    def parse(line: str) -> None:
        seen.append(line)

    output = AgentOutput(tmp_path, parse, progress, redactor)
    data = (
        '{"type":"system","subtype":"init"}\n'
        f'{{"type":"assistant","text":"key {SECRET} \u00e9\u20ac"}}\r\n'
        "not json at all\n"
        "\n"
        "last line without newline"
    ).encode()
    for chunk in chunks(data, 7):
        output.stdout.feed(chunk)
    output.close()
    written = (tmp_path / "agent.jsonl").read_bytes()
    assert written == redactor.data(data)
    assert SECRET.encode() not in written
    assert "".join(seen).encode() == written
    assert seen[1] == f'{{"type":"assistant","text":"key {MASKED} \u00e9\u20ac"}}\r\n'
    assert (tmp_path / "container.log").read_bytes() == b""
    assert SECRET not in progress_err.getvalue()


def test_agent_output_turns_tool_calls_into_progress_lines(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    progress, progress_err = make_progress(redactor)
    output = AgentOutput(tmp_path, ClaudeParser().feed, progress, redactor)
    output.stdout.feed(tool_line("Write", {"file_path": "/workspace/hello.txt"}).encode())
    output.stdout.feed(tool_line("Bash", {"command": f"echo {SECRET}"}).encode())
    output.close()
    shown = progress_err.getvalue()
    assert "Write hello.txt" in shown
    assert f"Bash: echo {MASKED}" in shown
    assert SECRET not in shown


def test_agent_output_sorts_stderr_lines(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    progress, progress_err = make_progress(redactor)
    output = AgentOutput(tmp_path, lambda line: None, progress, redactor)
    data = (
        "agent-worker: warning: the allowed host nowhere.invalid does not resolve\n"
        "agent-worker: cloning the branch\n"
        "\n"
        f"Error: something broke with {SECRET}\n"
        "   \n"
        "agent-worker: warning: second warning\n"
        "a line from the agent that mentions agent-worker: warning: later\n"
        "trailing line"
    ).encode()
    for chunk in chunks(data, 11):
        output.stderr.feed(chunk)
    output.close()
    assert list(output.tail) == [
        f"Error: something broke with {MASKED}",
        "a line from the agent that mentions agent-worker: warning: later",
        "trailing line",
    ]
    assert (tmp_path / "container.log").read_bytes() == redactor.data(data)
    assert (tmp_path / "agent.jsonl").read_bytes() == b""
    shown = progress_err.getvalue()
    assert "warning: the allowed host nowhere.invalid does not resolve" in shown
    assert "warning: second warning" in shown
    assert "cloning the branch" in shown
    assert SECRET not in shown


def test_agent_output_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    redactor = Redactor()
    progress, _ = make_progress(redactor)
    output = AgentOutput(tmp_path, lambda line: None, progress, redactor)
    output.stderr.feed("".join(f"line {n}\n" for n in range(30)).encode())
    output.close()
    assert list(output.tail) == [f"line {n}" for n in range(18, 30)]


# ---------------------------------------------------------------- RunLog

log = logging.getLogger("agent_worker")


def test_run_log_keeps_early_records_and_redacts_file_and_debug_stream(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    debug = io.StringIO()
    runlog = RunLog(redactor, debug=True, stderr=debug)
    try:
        log.info("before the run dir: key %s", SECRET)
        log.debug("a debug detail %d", 42)
        path = tmp_path / "agent-worker.log"
        runlog.to_file(path)
        assert runlog.path == path
        log.warning("after the run dir: %s", f"token={SECRET}")
    finally:
        runlog.close()
    log.info("after close: %s", SECRET)
    text = path.read_text(encoding="utf-8")
    assert SECRET not in text
    assert f"before the run dir: key {MASKED}" in text
    assert "a debug detail 42" in text
    assert f"after the run dir: token={MASKED}" in text
    assert text.index("before the run dir") < text.index("after the run dir")
    assert "after close" not in text
    shown = debug.getvalue()
    assert SECRET not in shown
    assert f"agent-worker: debug: before the run dir: key {MASKED}" in shown
    assert f"agent-worker: debug: after the run dir: token={MASKED}" in shown
    assert "after close" not in shown


def test_run_log_without_debug_prints_nothing(tmp_path: Path) -> None:
    redactor = Redactor([SECRET])
    stream = io.StringIO()
    runlog = RunLog(redactor, debug=False, stderr=stream)
    try:
        log.info("quiet %s", SECRET)
        runlog.to_file(tmp_path / "run.log")
        log.info("still quiet")
    finally:
        runlog.close()
    assert stream.getvalue() == ""
    text = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert f"quiet {MASKED}" in text
    assert "still quiet" in text


def test_the_status_line_takes_brackets_literally() -> None:
    import io

    from rich.console import Console

    from agent_worker_app.console import _Status

    status = _Status(0.0)
    status.text = "Building: [/dim] Step 3/17 : RUN [ -n x ] [bold]"
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=200).print(status)
    assert "Building: [/dim] Step 3/17 : RUN [ -n x ] [bold]" in out.getvalue()


# ---------------------------------------------------------------- names and text: data, not control

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
FORGED = ["\x1b[2J", "\x1b]2;", "\x07", "\x9b", "\x7f", "\x00", "\u202e", "\t"]


class TtyIO(io.StringIO):
    """A stream that says it is a terminal, as a user's stderr does."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain text, [brackets] and \\ back", "plain text, [brackets] and \\ back"),
        ("line one\nline two", "line one\\nline two"),
        ("tab\tcr\rbell\x07bs\x08vt\x0bff\x0c", "tab\\tcr\\rbell\\abs\\bvt\\vff\\f"),
        ("esc\x1b[2J", "esc\\033[2J"),
        ("nul\x00 del\x7f", "nul\\000 del\\177"),
        ("c1 csi\x9b nel\x85", "c1 csi\\302\\233 nel\\302\\205"),
        (
            "rlo\u202e zwsp\u200b ls\u2028",
            "rlo\\342\\200\\256 zwsp\\342\\200\\213 ls\\342\\200\\250",
        ),
        ("not utf-8: \udcff\udc80", "not utf-8: \\377\\200"),
        (
            "caf\u00e9 \u65e5\u672c \u00a0nbsp \U0001f600",
            "caf\u00e9 \u65e5\u672c \u00a0nbsp \U0001f600",
        ),
        ('"quoted"', '"quoted"'),
    ],
)
def test_escape_text(text: str, escaped: str) -> None:
    assert escape_text(text) == escaped
    assert "\n" not in escape_text(text)
    escape_text(text).encode("utf-8")  # printable on any UTF-8 stream


# each name, as bytes on disk, with the option under which git shows it as quote_name does:
# quotePath=false for what is ASCII or readable UTF-8; git's default for bytes that are not
# UTF-8 and for the C1 controls, which quotePath=false would print raw
GIT_NAMES = [
    (b"plain name.txt", "false"),
    (b"app/[slug]/page.tsx", "false"),
    (b"tab\there", "false"),
    (b"evil\nStatus   success", "false"),
    (b"esc\x1b[2Jx", "false"),
    (b"bell\x07 bs\x08 vt\x0b ff\x0c cr\r", "false"),
    (b"del\x7fx", "false"),
    (b"ctl\x01\x1f", "false"),
    (b"back\\slash", "false"),
    (b'dq"x', "false"),
    ("dossier \u00e9/nom \u00fc.txt".encode(), "false"),
    (b"bad\xffx", "true"),
    (b"c1\xc2\x9bx", "true"),
]


def test_quote_name_shows_names_as_git_does(tmp_path: Path) -> None:

    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    for raw, _ in GIT_NAMES:
        path = repo / raw.decode("utf-8", "surrogateescape")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    git(repo, "add", "-A")
    for raw, quote_path in GIT_NAMES:
        name = raw.decode("utf-8", "surrogateescape")
        shown = subprocess.run(
            ["git", "-C", str(repo), "-c", f"core.quotePath={quote_path}", "ls-files", "--", name],
            capture_output=True,
            check=True,
        ).stdout
        assert quote_name(name) == shown.decode("utf-8").rstrip("\n"), raw


def test_quote_name_leaves_ordinary_names_alone_and_quotes_format_characters() -> None:
    for name in ["src/app.py", "docs/[/x].md", "a b/c d", "\u65e5\u672c\u3000\u8a9e.md", "x'y"]:
        assert quote_name(name) == name
    assert quote_name("rlo\u202etxt.exe") == '"rlo\\342\\200\\256txt.exe"'
    assert quote_name("zw\u200bj") == '"zw\\342\\200\\213j"'


PROGRESS_CALLS = [
    ("phase", "Agent at work on branch [bold]agent/[wip][/]"),
    ("line", "Write app/[slug]/page.tsx"),
    ("line", "Write docs/[/x].md \x1b]2;pwned\x07"),
    ("warn", "allowed host [::1]:8080 is listed twice\x1b[2J\nStatus   success"),
    ("event", "Bash: printf [red]x[/red] \x9b\x7f\x00\u202e\tdone"),
    ("build_line", "image: setup 3/17 `[ -n x ] [/dim] \x1b[2J`"),
]
PROGRESS_SHOWN = [
    "Agent at work on branch [bold]agent/[wip][/]",
    "Write app/[slug]/page.tsx",
    "Write docs/[/x].md \\033]2;pwned\\a",
    "allowed host [::1]:8080 is listed twice\\033[2J\\nStatus   success",
    "Bash: printf [red]x[/red] \\302\\233\\177\\000\\342\\200\\256\\tdone",
    "image: setup 3/17 `[ -n x ] [/dim] \\033[2J`",
]


def drive(progress: Progress) -> None:
    from agent_worker_app.agents.base_agent import ProgressEvent

    for method, text in PROGRESS_CALLS:
        if method == "event":
            progress.event(ProgressEvent("tool", text))
        else:
            getattr(progress, method)(text)
    progress.close()


def screen_lines(raw: str) -> list[str]:
    """What a terminal would show, line by line: styling removed, cursor moves as line ends."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", raw)) if line.strip()]


@pytest.mark.parametrize("tty", [True, False])
def test_progress_shows_markup_and_control_characters_literally(
    tty: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    stderr = TtyIO() if tty else io.StringIO()
    drive(Progress(Env(stdout=io.StringIO(), stderr=stderr, plain=False), Redactor()))
    raw = stderr.getvalue()
    for control in FORGED:
        assert control not in raw, control
    assert "\x1b" not in ANSI.sub("", raw)
    if tty:
        assert "\x1b[" in raw  # styled: this is rich's terminal path
    lines = screen_lines(raw)
    for text in PROGRESS_SHOWN:
        assert any(text in line for line in lines), text
    assert not any(line.lstrip().startswith("Status") for line in lines)
    if not tty:
        assert len(raw.splitlines()) == len(PROGRESS_CALLS)
        assert raw.splitlines()[3] == f"agent-worker: warning: {PROGRESS_SHOWN[3]}"


def test_progress_masks_secrets_before_escaping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    for stderr in (TtyIO(), io.StringIO()):
        progress = Progress(
            Env(stdout=io.StringIO(), stderr=stderr, plain=False), Redactor([SECRET])
        )
        progress.line(f"key\n{SECRET}\x1b[2J")
        progress.warn(f"[{SECRET}]")
        progress.close()
        shown = ANSI.sub("", stderr.getvalue())
        assert SECRET not in shown
        assert f"key\\n{MASKED}\\033[2J" in shown
        assert f"[{MASKED}]" in shown


def test_the_build_status_line_is_escaped_and_cut() -> None:
    progress = Progress(Env(stdout=io.StringIO(), stderr=TtyIO(), plain=False), Redactor())
    try:
        # a command's output (two spaces first: images/build_output.py) goes to the status
        progress.build_line("  added [abc] \x1b[2J\n" + "x" * 100)
        assert progress._status.text.startswith(
            "Building the agent image: added [abc] \\033[2J\\nxxx"
        )
        assert "\x1b" not in progress._status.text
    finally:
        progress.close()


def test_the_debug_stream_shows_one_escaped_line_per_record(tmp_path: Path) -> None:
    debug = io.StringIO()
    runlog = RunLog(Redactor([SECRET]), debug=True, stderr=debug)
    try:
        log.info("agent stderr: %s", f"x\x1b[2J\nStatus   success {SECRET} [b]")
        runlog.to_file(tmp_path / "run.log")
    finally:
        runlog.close()
    assert debug.getvalue() == (
        f"agent-worker: debug: agent stderr: x\\033[2J\\nStatus   success {MASKED} [b]\n"
    )
    assert "x\x1b[2J\nStatus" in (tmp_path / "run.log").read_text()  # the file keeps the text


def test_agent_output_keeps_data_raw_and_shows_it_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    redactor = Redactor()
    stderr = TtyIO()
    progress = Progress(Env(stdout=io.StringIO(), stderr=stderr), redactor)
    output = AgentOutput(tmp_path, ClaudeParser().feed, progress, redactor)
    output.stdout.feed(
        tool_line("Write", {"file_path": "/workspace/t\x1b]2;pwned\x07[x].md"}).encode()
    )
    output.stderr.feed(b"agent-worker: warning: host [h]\x1b[2J is odd\r\n")
    output.stderr.feed(b"agent-worker: error: cannot clone [/] \x9b\n")
    output.close()
    progress.close()
    assert not hasattr(output, "error")  # shown only: the result channel decides
    raw = stderr.getvalue()
    for control in FORGED:
        assert control not in raw, control
    shown = "\n".join(screen_lines(raw))
    assert "Write t\\033]2;pwned\\a[x].md" in shown
    # the container's own lines quote commands' output: escape sequences are taken out
    assert "warning: host [h] is odd" in shown
    assert "error: cannot clone [/] \ufffd" in shown


@pytest.mark.parametrize(
    ("environ", "plain"),
    [
        ({}, False),
        ({"NO_COLOR": "1"}, True),
        ({"NO_COLOR": ""}, False),  # no-color.org: set and not empty
        ({"TERM": "dumb"}, True),
    ],
)
def test_no_color_or_a_dumb_terminal_asks_for_plain_output(
    environ: dict[str, str], plain: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    env = Env(stdout=TtyIO(), stderr=TtyIO())
    assert env.plain is plain
    assert (env.rich_stdout, env.rich_stderr) == (not plain, not plain)


def test_plain_progress_on_a_terminal_is_plain_lines() -> None:
    stderr = TtyIO()
    drive(Progress(Env(stdout=io.StringIO(), stderr=stderr, plain=True), Redactor()))
    raw = stderr.getvalue()
    assert "\x1b" not in raw
    assert len(raw.splitlines()) == len(PROGRESS_CALLS)
