"""The container protocol's host half (engines/channel.py) and what crosses a Swarm service's
boundary (engines/swarm/io.py): the inputs split between configs and secrets and cut under the
engine's limits, and the output read back (from a log, an attach), with the result files framed
by the nonce (agent_inside.sh's emit_files) and nothing else taken for them."""

from __future__ import annotations

import base64
import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent_worker_app.engines import channel, sweep
from agent_worker_app.engines.channel import (
    Capped,
    Demux,
    FileEntry,
    Lines,
    ResultFrames,
    ResultReader,
    ResultTooLargeError,
    extract_results,
)
from agent_worker_app.engines.swarm.io import (
    CONFIG_PIECE,
    SECRET_PIECE,
    LogStream,
    log_messages,
    pieces,
)

NONCE = "0123456789abcdef0123456789abcdef"


def test_the_nonce_and_credentials_go_only_to_secrets() -> None:
    files = [
        FileEntry("/agent-worker/task.md", b"do it"),
        FileEntry("/agent-worker/secrets", None, 0o700),
        FileEntry("/agent-worker/secrets/ANTHROPIC_API_KEY", b"sk-ant-x", 0o600),
        FileEntry("/agent-worker/source.pack", b"PACK"),
        FileEntry("/agent-worker/secrets-not", b"public"),
    ]
    inputs = channel.inputs(files, NONCE)
    public, private = inputs.split()
    assert [e.path for e in private] == [
        "/agent-worker/nonce",
        "/agent-worker/secrets",
        "/agent-worker/secrets/ANTHROPIC_API_KEY",
    ]
    assert [e.path for e in public] == [
        "/agent-worker/task.md",
        "/agent-worker/source.pack",
        "/agent-worker/secrets-not",
    ]
    assert inputs.nonce == NONCE
    assert inputs.files[0] == FileEntry("/agent-worker/nonce", NONCE.encode(), 0o600)


def test_pieces_stay_under_the_engine_limits_and_join_up_again() -> None:
    assert CONFIG_PIECE < 1_000_000
    assert SECRET_PIECE < 500 * 1024
    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    cut = list(pieces(io.BytesIO(data), SECRET_PIECE))
    assert [len(p) for p in cut] == [SECRET_PIECE, SECRET_PIECE, len(data) - 2 * SECRET_PIECE]
    assert b"".join(cut) == data
    assert list(pieces(io.BytesIO(b""), SECRET_PIECE)) == [b""]  # one piece, even of nothing


def _frames_of(files: dict[str, bytes], nonce: str = NONCE) -> list[bytes]:
    """What agent_inside.sh prints for these result files: the same tar | base64 | sed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    done = subprocess.run(
        [
            "bash",
            "-c",
            "base64 -w 3000 | sed -f <(printf 's/^/agent-worker-out %s /\\n' \"$1\")",
            "bash",
            nonce,
        ],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
    )
    return [line + b"\n" for line in done.stdout.splitlines()]


def test_result_frames_come_back_as_files(tmp_path: Path) -> None:
    bundle = bytes(range(256)) * 100
    frames = ResultFrames(NONCE)
    lines = _frames_of({"result.bundle": bundle, "agent-tail.jsonl": b'{"type":"result"}\n'})
    assert len(lines) > 1
    assert all(frames.take(line) for line in lines)
    assert frames.extract(tmp_path / "out")
    assert (tmp_path / "out" / "result.bundle").read_bytes() == bundle
    assert (tmp_path / "out" / "agent-tail.jsonl").read_text() == '{"type":"result"}\n'
    frames.close()


def test_frames_with_another_nonce_are_output_not_results(tmp_path: Path) -> None:
    frames = ResultFrames(NONCE)
    forged = _frames_of({"result.bundle": b"forged"}, nonce="f" * 32)
    assert not any(frames.take(line) for line in forged)
    assert not frames.take(b"agent-worker-out  \n")
    assert not frames.extract(tmp_path / "out")
    assert not ResultFrames("").take(b"agent-worker-out  eA==\n")  # no nonce: nothing is a frame


def test_links_and_devices_in_the_results_are_skipped_not_fatal(tmp_path: Path) -> None:
    """What the agent left in its output besides the results: an absolute symlink, one that
    climbs out, a hard link, a device, a name outside the directory. The files are kept."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, target in [
            ("out", tarfile.DIRTYPE, ""),
            ("out/absolute", tarfile.SYMTYPE, "/etc/passwd"),
            ("out/climbing", tarfile.SYMTYPE, "../../../../etc/passwd"),
            ("out/nearby", tarfile.SYMTYPE, "result.bundle"),
            ("out/hard", tarfile.LNKTYPE, "/etc/passwd"),
            ("out/device", tarfile.CHRTYPE, ""),
            ("out/fifo", tarfile.FIFOTYPE, ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tar.addfile(info)
        for name in ("out/result.bundle", "../escaped", "/absolute-name"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
    buffer.seek(0)
    dest = tmp_path / "run"
    dest.mkdir()
    extract_results(buffer, dest)
    assert sorted(p.name for p in (dest / "out").iterdir()) == ["result.bundle"]
    assert (dest / "out" / "result.bundle").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing outside dest
    assert sorted(p.name for p in dest.iterdir()) == ["absolute-name", "out"]  # made relative


def _results_tar(files: list[tuple[str, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_a_result_cut_at_its_cap_keeps_the_files_that_came_whole(tmp_path: Path) -> None:
    """The host stops reading at --max-result-size: a file cut there is not kept (never a
    truncated bundle), those before it are."""
    archive = _results_tar([("agent-tail.jsonl", b"tail\n"), ("result.bundle", b"x" * 100_000)])
    cut = io.BytesIO()
    writer = Capped(cut, 20_000)

    def copy() -> None:
        while piece := archive.read(4096):
            writer.write(piece)

    with pytest.raises(ResultTooLargeError, match=r"--max-result-size \(20000\)"):
        copy()
    assert len(cut.getvalue()) == 20_000  # it stopped reading there
    extract_results(cut, tmp_path, end=20_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent-tail.jsonl"]
    assert (tmp_path / "agent-tail.jsonl").read_bytes() == b"tail\n"


def test_frames_past_their_cap_are_dropped_and_say_so(tmp_path: Path) -> None:
    archive = _results_tar([("agent-tail.jsonl", b"tail\n"), ("result.bundle", b"y" * 50_000)])
    data = archive.getvalue()
    lines = [
        f"agent-worker-out {NONCE} {base64.b64encode(data[at : at + 3000]).decode()}\n".encode()
        for at in range(0, len(data), 3000)
    ]
    frames = ResultFrames(NONCE, max_bytes=10_000)
    assert all(frames.take(line) for line in lines)
    assert frames.over
    with pytest.raises(ResultTooLargeError, match="10000"):
        frames.extract(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["agent-tail.jsonl"]
    # under a cap given later (the run's own, smaller than the reader's), the same
    whole = ResultFrames(NONCE)
    assert all(whole.take(line) for line in lines)
    with pytest.raises(ResultTooLargeError, match="2k"):
        whole.extract(tmp_path / "again", 2048)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["agent-tail.jsonl"]
    assert whole.extract(tmp_path / "all", 1 << 20)
    assert (tmp_path / "all" / "result.bundle").stat().st_size == 50_000


def test_broken_frames_are_no_result(tmp_path: Path) -> None:
    frames = ResultFrames(NONCE)
    assert frames.take(f"agent-worker-out {NONCE} !!!not base64\n".encode())
    assert not frames.extract(tmp_path / "out")


def _multiplexed(messages: list[tuple[int, bytes]]) -> bytes:
    return b"".join(
        bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data for stream, data in messages
    )


def test_log_messages_are_read_whole_and_a_cut_one_ends_the_stream() -> None:
    raw = _multiplexed([(1, b"out\n"), (2, b"err\n"), (1, b"")])
    assert list(log_messages(io.BytesIO(raw).read)) == [(1, b"out\n"), (2, b"err\n"), (1, b"")]
    assert list(log_messages(io.BytesIO(raw[:-2] + raw[:6]).read)) == [(1, b"out\n"), (2, b"err\n")]


def _stream(
    messages: list[tuple[int, bytes]], reader_of: Callable[[Callable[[bytes], None]], ResultReader]
) -> tuple[LogStream, list[bytes], list[bytes], list[bool]]:
    out: list[bytes] = []
    err: list[bytes] = []
    closed: list[bool] = []

    def open_log() -> tuple[Iterator[tuple[int, bytes]], Callable[[], None]]:
        return iter(messages), lambda: closed.append(True)

    return LogStream(open_log, reader_of(err.append), out.append), out, err, closed


def test_the_stream_passes_output_on_keeps_frames_and_ends_at_the_result_line(
    tmp_path: Path,
) -> None:
    lines = _frames_of({"result.bundle": b"BUNDLE"})
    result = f"agent-worker-result {NONCE} e30=\n".encode()
    messages = [
        (1, b'{"type":"system"}\n'),
        (2, b"agent-worker: firewall"),  # a line in two messages
        (2, b" ready\n"),
        *((2, line) for line in lines),
        (2, f"agent-worker-out {'f' * 32} Zm9yZ2Vk\n".encode()),  # not this task's
        (2, result),
        (1, b"never read\n"),
    ]
    stream, out, err, closed = _stream(messages, lambda on: ResultReader(NONCE, on))
    stream.run()
    assert out == [b'{"type":"system"}\n']
    assert b"".join(err) == (  # the result line is the protocol's, not output
        b"agent-worker: firewall ready\n" + f"agent-worker-out {'f' * 32} Zm9yZ2Vk\n".encode()
    )
    assert stream.result == "{}"
    assert stream.ended.is_set()
    assert closed
    assert stream.error is None
    assert stream.reader.frames.extract(tmp_path / "out")
    assert (tmp_path / "out" / "result.bundle").read_bytes() == b"BUNDLE"


def test_a_stream_cut_short_keeps_its_last_partial_line() -> None:
    stream, _, err, _ = _stream([(2, b"last words")], lambda on: ResultReader(NONCE, on))
    stream.run()
    assert err == [b"last words"]
    assert not stream.ended.is_set()


def test_a_swarm_run_is_swept_when_its_process_here_is_gone_or_elsewhere_past_its_deadline() -> (
    None
):
    import os
    import socket

    _gone = sweep.gone
    now = 1_000_000.0
    mine = sweep.labels("r1", Path("/p")) | {sweep.DEADLINE: str(int(now - 10))}  # alive
    assert not _gone(mine, now)  # past its deadline, but its agent-worker still waits for it
    dead = mine | {"agent-worker.pid": str(2**22 + 7)}
    assert _gone(dead, now - 100)
    elsewhere = mine | {"agent-worker.host": socket.gethostname() + "-other"}
    assert _gone(elsewhere, now)
    assert not _gone(elsewhere, now - 100)
    assert os.getpid() == int(mine["agent-worker.pid"])


def test_a_check_task_is_never_a_lost_run_and_goes_once_its_run_is_gone() -> None:
    """A check's task holds no work of the agent's: recovery never takes it, and once its
    run is gone (here: its process; elsewhere: its deadline) the sweep removes it at once,
    not 7 days later."""
    import socket

    from agent_worker_app.engines.base import ExitInfo

    now = 1_000_000.0
    role = {sweep.ROLE: sweep.CHECK_ROLE, sweep.DEADLINE: str(int(now + 600))}
    alive = sweep.labels("r1", Path("/p")) | role
    assert sweep.note(alive, False, now) is None  # its run still waits for it
    dead = alive | {"agent-worker.pid": str(2**22 + 7)}
    assert sweep.note(dead, False, now) == "the check container of a run that is gone"
    assert sweep.note(dead, True, now) is None  # still running: it stops by itself
    elsewhere = alive | {"agent-worker.host": socket.gethostname() + "-other"}
    assert sweep.note(elsewhere, False, now) is None
    assert sweep.note(elsewhere, False, now + 601) == "the check container of a run that is gone"
    exited = ExitInfo(0, False, None)
    assert sweep.lost([("c", dead, True)], lambda handle: exited) == []
    agent = {k: v for k, v in dead.items() if k != sweep.ROLE}
    assert [t.task.handle for t in sweep.lost([("a", agent, True)], lambda h: exited)] == ["a"]
    # an agent's task of a run that is gone waits for its recovery
    assert sweep.note(agent, False, now) is None


def test_the_result_reader_passes_output_on_at_once_and_keeps_the_frames(tmp_path: Path) -> None:
    seen: list[bytes] = []
    stderr = ResultReader(NONCE, seen.append)
    frames = stderr.frames
    stderr.feed(b"progress: 1")  # cannot become a frame: passed on before its line ends
    assert seen == [b"progress: 1"]
    stderr.feed(b"0%\nagent-wor")  # may become one: held back
    assert seen == [b"progress: 1", b"0%\n"]
    lines = _frames_of({"result.bundle": b"the agent's commits"})
    stderr.feed(b"ker-out " + NONCE.encode() + b" " + lines[0].split(b" ", 2)[2])
    for line in lines[1:]:
        stderr.feed(line)
    assert not stderr.complete
    forged = f"agent-worker-result {'f' * 32} e30=\n".encode()  # another nonce: output
    stderr.feed(forged)
    assert not stderr.complete
    assert stderr.result is None
    result = f"agent-worker-result {NONCE} e30=\n".encode()
    stderr.feed(result)
    assert stderr.complete
    assert stderr.result == "{}"  # the payload alone, decoded, never the forged line's
    assert b"".join(seen) == b"progress: 10%\n" + forged  # the result line is not output
    assert frames.extract(tmp_path / "out")
    assert (tmp_path / "out" / "result.bundle").read_bytes() == b"the agent's commits"
    frames.close()


def test_the_result_reader_gives_back_a_held_line_when_the_stream_ends() -> None:
    seen: list[bytes] = []
    stderr = ResultReader(NONCE, seen.append)
    stderr.feed(b"done\nagent-worker-o")
    stderr.end()
    assert seen == [b"done\n", b"agent-worker-o"]


def test_the_result_reader_knows_the_result_line_whatever_pieces_it_comes_in() -> None:
    for size in (1, 3, 7, 20):
        stderr = ResultReader(NONCE, lambda data: None)
        data = f"done\n\nagent-worker-result {NONCE} e30=\n".encode()
        for at in range(0, len(data), size):
            stderr.feed(data[at : at + size])
        assert stderr.complete, size
        assert stderr.result == "{}", size


def test_a_result_line_that_is_not_base64_of_text_is_no_result() -> None:
    stderr = ResultReader(NONCE, lambda data: None)
    stderr.feed(f"agent-worker-result {NONCE} !!!\n".encode())
    assert stderr.complete  # it came (the task ended), but it says nothing
    assert stderr.result is None


def test_the_multiplexed_stream_is_parsed_however_it_is_cut() -> None:
    """One parser for an attach (chunks as the socket gives them) and a log (read(n) of what
    ends the current header or message): the same frames, whatever the cut."""
    raw = _multiplexed([(1, b"out\n"), (2, b"e" * 300), (1, b""), (2, b"last")])
    for size in (1, 5, 8, 9, 64, len(raw)):
        demux = Demux()
        got: list[tuple[int, bytes]] = []
        for at in range(0, len(raw), size):
            got.extend(demux.feed(raw[at : at + size]))
        joined: list[tuple[int, bytes]] = []
        for stream, data in got:  # a large frame may come in pieces: join them up
            if joined and joined[-1][0] == stream and data and joined[-1][1]:
                joined[-1] = (stream, joined[-1][1] + data)
            else:
                joined.append((stream, data))
        assert joined == [(1, b"out\n"), (2, b"e" * 300), (1, b""), (2, b"last")], size


def test_lines_hold_back_only_what_may_become_a_mark() -> None:
    seen: list[bytes] = []
    lines = Lines(seen.append, hold=lambda start: b"MARK".startswith(start[:4]))
    lines.feed(b"abc")
    assert seen == [b"abc"]  # cannot become one: at once
    lines.feed(b"\nMA")
    assert seen == [b"abc", b"\n"]  # held
    lines.feed(b"RK 1\n")
    assert seen == [b"abc", b"\n", b"MARK 1\n"]


def test_an_account_is_vouched_for_only_with_its_own_nonce() -> None:
    """The result line a task keeps for recovery: its JSON with the run's nonce, nothing for a
    line marked with another, a bare JSON account, or no nonce at all."""
    line = channel.result_line(NONCE, '{"phase": "agent"}').encode()
    assert channel.vouched(line, NONCE) == '{"phase": "agent"}'
    assert channel.vouched(b"\n" + line + b"trailing\n", NONCE) == '{"phase": "agent"}'
    assert channel.vouched(line, "f" * 32) is None
    assert channel.vouched(channel.result_line("f" * 32, "{}").encode(), NONCE) is None
    assert channel.vouched(b'{"phase": "agent"}\n', NONCE) is None
    assert channel.vouched(line, "") is None
    assert channel.vouched(b"", NONCE) is None
