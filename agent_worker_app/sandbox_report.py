"""What the container's root stage says of the run besides the agent: the check command's
outcome, the destinations the firewall blocked and what the credential gate counted. Plain
values read from the task's result channel (never from anything the agent prints), their report
rows and their JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent_worker_app.console import escape_text

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import AgentResult

BLOCKED_TERMINAL_LIMIT = 10  # blocked destinations the terminal panel shows; the rest counted
CHECK_TAIL_SHOWN = 5  # lines of a failed check's output shown in the report's rows
ALLOW_HINT = (
    "to allow one: --allow-host HOST:PORT (or allow_hosts in .agent-worker/environment.toml); "
    "or move the download into the environment's setup, which has the network"
)


@dataclass(frozen=True)
class CheckOutcome:
    """The check command's run, as the container's root stage recorded it."""

    command: str
    ran: bool = False
    exit_code: int | None = None  # None: it did not run, or was stopped
    duration_s: float | None = None
    output_tail: tuple[str, ...] = ()
    stopped: str | None = None  # why it was stopped before it ended, if it was

    @property
    def passed(self) -> bool:
        return self.ran and self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "ran": self.ran,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "duration_s": self.duration_s,
            "stopped": self.stopped,
            "output_tail": list(self.output_tail),
        }


@dataclass(frozen=True)
class Blocked:
    """One destination the firewall refused, the names the agent's lookups gave it (where
    known), and how many packets it refused (one per TCP connection attempt); or, with protocol
    "dns", a name whose lookups the container's DNS forwarder refused, and how many times."""

    address: str
    port: int
    protocol: str = "tcp"
    count: int = 1
    names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allow(self) -> str:
        """The --allow-host value that lets it through."""
        if self.protocol == "dns":
            return self.names[0] if self.names else self.address
        return f"{self.names[0] if self.names else self.address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "protocol": self.protocol,
            "names": list(self.names),
            "count": self.count,
            "allow": f"--allow-host {self.allow}",
        }


def parse_check(data: Any) -> CheckOutcome | None:
    """The result's "check" object; None when there is none. Raises on a malformed one."""
    if data is None:
        return None
    exit_code = data.get("exit_code")
    duration = data.get("duration_s")
    return CheckOutcome(
        command=str(data["command"]),
        ran=bool(data.get("ran")),
        exit_code=None if exit_code is None else int(exit_code),
        duration_s=None if duration is None else float(duration),
        output_tail=tuple(str(line) for line in data.get("output_tail") or ()),
        stopped=str(data["stopped"]) if data.get("stopped") else None,
    )


def parse_blocked(data: Any) -> tuple[Blocked, ...]:
    """The result's "blocked" list. Raises on a malformed one."""
    return tuple(
        Blocked(
            address=str(item["address"]),
            port=int(item["port"]),
            protocol=str(item.get("protocol") or "tcp"),
            count=int(item.get("count") or 0),
            names=tuple(str(name) for name in item.get("names") or ()),
        )
        for item in data or ()
    )


@dataclass(frozen=True)
class Meter:
    """What the credential gate counted of the agent's API traffic (container/credential-gate.py):
    every request it sent on, the answers that were errors, the requests it refused (a spent
    budget), and the tokens of every answer, by kind (input: not read from a cache)."""

    requests: int = 0
    errors: int = 0
    retries: int = 0  # requests that followed an error answer
    refused: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_usd: float | None = None  # with the agent's prices: what the counted tokens cost
    limit_usd: float | None = None  # the budget (--max-cost), if there was one

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "retries": self.retries,
            "refused": self.refused,
            "tokens": {
                "input": self.input,
                "output": self.output,
                "cache_read": self.cache_read,
                "cache_creation": self.cache_write,
                "total": self.input + self.output,
            },
            "cost_usd": self.cost_usd,
            "limit_usd": self.limit_usd,
        }

    def disagreement(self, result: AgentResult) -> str:
        """What differs between the agent's own token figures and the gate's count; "" when
        they agree (or the agent reported none)."""
        reported = (
            result.input_tokens,
            result.output_tokens,
            result.cache_read_tokens,
            result.cache_creation_tokens,
        )
        counted = (self.input, self.output, self.cache_read, self.cache_write)
        names = ("input", "output", "cache read", "cache write")
        differ = [
            f"{name} {theirs:,} (counted {ours:,})"
            for name, theirs, ours in zip(names, reported, counted, strict=True)
            if theirs is not None and theirs != ours
        ]
        return ", ".join(differ)


def parse_meter(data: Any) -> Meter | None:
    """The result's "meter" object (None without a gate). Raises on a malformed one."""
    if data is None:
        return None

    def count(key: str) -> int:
        value = int(data.get(key) or 0)
        if value < 0:
            raise ValueError(f"a negative {key}")
        return value

    cost, limit = data.get("cost_usd"), data.get("limit_usd")
    return Meter(
        requests=count("requests"),
        errors=count("errors"),
        retries=count("retries"),
        refused=count("refused"),
        input=count("input_tokens"),
        output=count("output_tokens"),
        cache_read=count("cache_read_tokens"),
        cache_write=count("cache_write_tokens"),
        cost_usd=None if cost is None else float(cost),
        limit_usd=None if limit is None else float(limit),
    )


def meter_rows(meter: Meter | None) -> list[tuple[str, str]]:
    """The report's Metered row: what the credential gate counted."""
    if meter is None:
        return []
    parts = [f"{meter.requests} request{'s' if meter.requests != 1 else ''}"]
    if meter.errors:
        parts.append(f"{meter.errors} answered with an error")
    if meter.retries:
        parts.append(f"{meter.retries} retried")
    if meter.refused:
        parts.append(f"{meter.refused} refused (budget spent)")
    parts.append(
        f"{meter.input + meter.output:,} tokens ({meter.input:,} in, {meter.output:,} out)"
    )
    if meter.cost_usd is not None:
        parts.append(f"${meter.cost_usd:.4f}")
    return [("Metered", " \u00b7 ".join(parts) + ", counted by the credential gate")]


def check_rows(check: CheckOutcome | None) -> list[tuple[str, str]]:
    """The report's Check row (none when no check was configured): its outcome and, when it
    failed, its last lines. Escaped: the command and its output are data."""
    if check is None:
        return []
    command = escape_text(check.command)
    if not check.ran:
        return [("Check", f"not run: {command}")]
    took = f"{check.duration_s:.1f}s" if check.duration_s is not None else "?"
    if check.passed:
        return [("Check", f"passed (exit 0, {took}): {command}")]
    state = f"stopped ({escape_text(check.stopped)})" if check.stopped else "failed"
    code = "" if check.exit_code is None else f"exit {check.exit_code}, "
    rows = [("Check", f"{state} ({code}{took}): {command}")]
    rows.extend(("", "  " + escape_text(line)) for line in check.output_tail[-CHECK_TAIL_SHOWN:])
    return rows


def blocked_rows(
    blocked: tuple[Blocked, ...] | list[Blocked], *, limit: int | None = None
) -> list[tuple[str, str]]:
    """One row per blocked destination (cut at limit, the rest counted) and how to allow it."""
    if not blocked:
        return []
    shown = list(blocked) if limit is None or len(blocked) <= limit + 1 else blocked[:limit]
    count = len(blocked)
    rows = [("Blocked", f"{count} destination{'s' if count != 1 else ''} the firewall refused")]
    for entry in shown:
        times = f"{entry.count} time{'s' if entry.count != 1 else ''}"
        if entry.protocol == "dns":
            rows.append(("", f"  lookup of {escape_text(entry.allow)} refused {times}"))
            continue
        where = f"{entry.address}:{entry.port}"
        if entry.protocol != "tcp":
            where += f"/{entry.protocol}"
        names = escape_text(", ".join(entry.names)) if entry.names else "name unknown"
        rows.append(("", f"  {where} ({names}) {times}"))
    if hidden := count - len(shown):
        rows.append(("", f"  ... and {hidden} more (every one: --json, or report.json)"))
    rows.append(("", f"  {ALLOW_HINT}"))
    return rows
