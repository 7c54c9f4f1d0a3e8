"""The check's outcome and the blocked destinations: read from the task's result line, shown
in the report (terminal and JSON) as data."""

from __future__ import annotations

import io
import json

from test_report import ANSI, make_report, rows

from agent_worker_app.report import render_json, render_rich, render_text
from agent_worker_app.sandbox_report import ALLOW_HINT, Blocked, CheckOutcome
from agent_worker_app.task_result import parse_inside

RESULT = {
    "phase": "agent",
    "error": None,
    "head": "b" * 40,
    "bundle": True,
    "agent_exit": 0,
    "check": {
        "command": "python -m pytest -q",
        "ran": True,
        "exit_code": 1,
        "duration_s": 2.345,
        "stopped": None,
        "output_tail": ["FAILED test_x.py::test_add", "1 failed in 0.1s"],
    },
    "blocked": [
        {
            "address": "203.0.113.80",
            "protocol": "tcp",
            "port": 443,
            "count": 6,
            "names": ["pypi.org", "files.pythonhosted.org"],
        },
        {"address": "10.0.0.9", "protocol": "udp", "port": 5000, "count": 1},
    ],
}


def test_the_result_line_carries_the_check_and_the_blocked_list() -> None:
    inside, problem = parse_inside(json.dumps(RESULT))
    assert problem is None
    assert inside is not None
    assert inside.check == CheckOutcome(
        "python -m pytest -q",
        ran=True,
        exit_code=1,
        duration_s=2.345,
        output_tail=("FAILED test_x.py::test_add", "1 failed in 0.1s"),
    )
    assert not inside.check.passed
    assert inside.blocked == (
        Blocked("203.0.113.80", 443, "tcp", 6, ("pypi.org", "files.pythonhosted.org")),
        Blocked("10.0.0.9", 5000, "udp", 1, ()),
    )


def test_a_result_without_them_has_none() -> None:
    inside, _ = parse_inside(json.dumps({"phase": "agent", "bundle": False}))
    assert inside is not None
    assert (inside.check, inside.blocked) == (None, ())


def test_a_malformed_check_or_list_makes_the_result_unreadable() -> None:
    for bad in ({"check": {"ran": True}}, {"blocked": [{"port": "x", "address": "a"}]}):
        inside, problem = parse_inside(json.dumps({"phase": "agent"} | bad))
        assert inside is None
        assert problem is not None
        assert "cannot be read" in problem


def test_json_check_is_null_without_a_check_and_blocked_empty() -> None:
    data = make_report().to_json()
    assert data["check"] is None
    assert data["blocked"] == []


def test_json_check_and_blocked() -> None:
    inside, _ = parse_inside(json.dumps(RESULT))
    assert inside is not None
    data = json.loads(render_json(make_report(check=inside.check, blocked=list(inside.blocked))))
    assert data["check"] == {
        "command": "python -m pytest -q",
        "ran": True,
        "passed": False,
        "exit_code": 1,
        "duration_s": 2.345,
        "stopped": None,
        "output_tail": ["FAILED test_x.py::test_add", "1 failed in 0.1s"],
    }
    assert data["blocked"][0] == {
        "address": "203.0.113.80",
        "port": 443,
        "protocol": "tcp",
        "names": ["pypi.org", "files.pythonhosted.org"],
        "count": 6,
        "allow": "--allow-host pypi.org:443",
    }
    assert data["blocked"][1]["allow"] == "--allow-host 10.0.0.9:5000"


def test_text_rows_show_the_check_and_each_blocked_destination() -> None:
    inside, _ = parse_inside(json.dumps(RESULT))
    assert inside is not None
    text = render_text(make_report(check=inside.check, blocked=list(inside.blocked)))
    found = rows(text)
    assert found["Check"] == ["failed (exit 1, 2.3s): python -m pytest -q"]
    assert found["Blocked"] == ["2 destinations the firewall refused"]
    assert found[""][-3:] == [
        "  203.0.113.80:443 (pypi.org, files.pythonhosted.org) 6 times",
        "  10.0.0.9:5000/udp (name unknown) 1 time",
        f"  {ALLOW_HINT}",
    ]
    assert "  FAILED test_x.py::test_add" in found[""]


def test_a_passing_check_is_one_row_and_no_check_is_none() -> None:
    passed = CheckOutcome("make test", ran=True, exit_code=0, duration_s=0.25)
    assert rows(render_text(make_report(check=passed)))["Check"] == [
        "passed (exit 0, 0.2s): make test"
    ]
    assert "Check" not in rows(render_text(make_report()))
    assert rows(render_text(make_report(check=CheckOutcome("make test"))))["Check"] == [
        "not run: make test"
    ]


def test_the_terminal_cuts_a_long_blocked_list_and_json_keeps_it() -> None:
    many = [Blocked(f"10.0.0.{i}", 80, count=1) for i in range(25)]
    out = io.StringIO()
    render_rich(make_report(blocked=many), out, width=120)
    shown = ANSI.sub("", out.getvalue())
    assert "10.0.0.9:80" in shown
    assert "10.0.0.10:80" not in shown
    assert "... and 15 more" in shown
    assert len(json.loads(render_json(make_report(blocked=many)))["blocked"]) == 25
    assert render_text(make_report(blocked=many)).count(":80 (name unknown)") == 25


def test_command_output_and_names_are_data_on_the_terminal() -> None:
    check = CheckOutcome(
        "echo [bold]x\x1b[2J", ran=True, exit_code=2, output_tail=("\x1b]0;title\x07[red]no",)
    )
    blocked = [Blocked("10.0.0.1", 443, names=("evil\x1b[31m.example",))]
    out = io.StringIO()
    render_rich(make_report(check=check, blocked=blocked), out, width=200)
    shown = ANSI.sub("", out.getvalue())
    assert "echo [bold]x\\033[2J" in shown
    assert "\\033]0;title\\a[red]no" in shown
    assert "evil\\033[31m.example" in shown
    text = render_text(make_report(check=check, blocked=blocked))
    assert "\x1b" not in text


def test_a_refused_lookup_is_a_row_of_its_own_and_its_name_the_way_to_allow_it() -> None:
    result = RESULT | {
        "blocked": [
            {
                "address": "",
                "protocol": "dns",
                "port": 53,
                "count": 3,
                "names": ["6b6579.x.example"],
            }
        ]
    }
    inside, _ = parse_inside(json.dumps(result))
    assert inside is not None
    report = make_report(blocked=list(inside.blocked))
    found = rows(render_text(report))
    assert found["Blocked"] == ["1 destination the firewall refused"]
    assert "  lookup of 6b6579.x.example refused 3 times" in found[""]
    assert report.to_json()["blocked"][0]["allow"] == "--allow-host 6b6579.x.example"
