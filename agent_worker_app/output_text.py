"""What a command printed, made readable for an error line: its terminal escape sequences
(colours, cursor moves, titles) taken out rather than escaped, its carriage-return redraws
resolved to what a terminal would end up showing, and, of its last lines, those that say why it
failed (the noise package managers print after the reason dropped). Pure text in, text out.

Taking escape sequences out is safe for display: what is left still goes through
console.escape_text, which escapes any control character that remains."""

from __future__ import annotations

import re
from collections.abc import Iterable

# ECMA-48: CSI (ESC [ or the C1 byte) parameters, intermediates, a final byte; OSC (ESC ]) up to
# BEL or ST; the other two-character escapes (ESC and one byte in @-_, charset selections).
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[()*+][0-9A-Za-z]"
    r"|\x1b[@-Z\\^_]"
    r"|\x1b[0-9=<>]"
)

# Lines a tool prints after its reason, that never are the reason (compared case-insensitively
# with the line's start, its box-drawing and blanks taken off).
_NOISE = re.compile(
    r"(?:see above for (?:output|details)"
    r"|note: this error originates from a subprocess"
    r"|hint: see above"
    r"|\[end of output\]"
    r"|exit code: \d+$"
    r"|npm (?:err!|error) a complete log of this run can be found in"
    r"|npm (?:err!|error)\s+/\S+\.log$"
    r"|a complete log of this run can be found in"
    r")",
    re.IGNORECASE,
)
# A line of a command's output passed to a progress sink (images/build_output.py): shown on a
# terminal's status line only, never as a line of its own (the build log keeps it).
OUTPUT_MARK = "  "
_DECORATION = " \t│╰─>\u00d7╭┃┗━"  # the boxes pip draws round a subprocess


def strip_ansi(text: str) -> str:
    """text without its terminal escape sequences."""
    if "\x1b" not in text and "\x9b" not in text and "\x9d" not in text:
        return text
    return _ANSI.sub("", text)


def clean_line(line: str) -> str:
    """One line as a terminal would end up showing it: escapes out, and after a carriage
    return only what was drawn over it (a progress bar's last state), trailing blanks off."""
    line = strip_ansi(line).rstrip("\r\n")
    if "\r" in line:
        drawn = [part for part in line.split("\r") if part.strip()]
        line = drawn[-1] if drawn else ""
    return line.rstrip()


def clean_lines(lines: Iterable[str]) -> list[str]:
    """clean_line of each line (a chunk holding several lines is split)."""
    out: list[str] = []
    for chunk in lines:
        out.extend(clean_line(line) for line in strip_ansi(chunk).split("\n"))
    return out


def is_noise(line: str) -> bool:
    """A line that is never a failure's reason: blank, or a tool's pointer elsewhere."""
    bare = line.strip(_DECORATION)
    return not bare or bool(_NOISE.match(bare))


def telling_lines(lines: Iterable[str], count: int = 3) -> list[str]:
    """The last count lines that may say why a command failed: cleaned, noise left out."""
    kept = [line for line in clean_lines(lines) if not is_noise(line)]
    return [line.strip() for line in kept[-count:]]


def clean_message(text: str) -> str:
    """A message that quotes a command's output (the container's own error lines): escapes
    out, carriage returns dropped."""
    return strip_ansi(text).replace("\r\n", "\n").replace("\r", "")
