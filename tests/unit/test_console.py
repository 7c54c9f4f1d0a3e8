"""console.py: bytes split into lines, secrets masked everywhere, agent output and the run log."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from agents.claude_agent import ClaudeAgent
from console import AgentOutput, Env, LineSplitter, Progress, Redactor, RunLog, mask

SECRET = "sk-ant-api03-Zq8mWx4LkPz0aBcD1eF2gH3iJ"
MASKED = "sk-ant-\u2026H3iJ"


class Collector:
    """Everything a LineSplitter passes on, piece by piece."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def __call__(self, piece: bytes) -> None:
        self.pieces.append(piece)

    @property
    def joined(self) -> bytes:
        return b"".join(self.pieces)


def splitter(redactor: Redactor | None = None, **kw: int) -> tuple[LineSplitter, Collector]:
    redactor = redactor or Redactor()
    out = Collector()
    kw.setdefault("keep", redactor.longest)
    return LineSplitter(out, redact=redactor.data, **kw), out


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
    assert later.longest == len(SECRET)


# ---------------------------------------------------------------- LineSplitter


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
    output = AgentOutput(tmp_path, ClaudeAgent().on_output_line, progress, redactor)
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
    assert output.warnings == [
        "the allowed host nowhere.invalid does not resolve",
        "second warning",
    ]
    assert list(output.tail) == [
        f"Error: something broke with {MASKED}",
        "a line from the agent that mentions agent-worker: warning: later",
        "trailing line",
    ]
    assert (tmp_path / "container.log").read_bytes() == redactor.data(data)
    assert (tmp_path / "agent.jsonl").read_bytes() == b""
    shown = progress_err.getvalue()
    assert "agent-worker: warning: the allowed host nowhere.invalid does not resolve" in shown
    assert "agent-worker: warning: second warning" in shown
    assert "cloning the branch" in shown
    assert SECRET not in shown


def test_agent_output_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    redactor = Redactor()
    progress, _ = make_progress(redactor)
    output = AgentOutput(tmp_path, lambda line: None, progress, redactor)
    output.stderr.feed("".join(f"line {n}\n" for n in range(30)).encode())
    output.close()
    assert list(output.tail) == [f"line {n}" for n in range(18, 30)]
    assert output.warnings == []


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

    from console import _Status

    status = _Status(0.0)
    status.text = "Building: [/dim] Step 3/17 : RUN [ -n x ] [bold]"
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=200).print(status)
    assert "Building: [/dim] Step 3/17 : RUN [ -n x ] [bold]" in out.getvalue()
