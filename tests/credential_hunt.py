"""The hunt for a run's credential, from the host's side: the needles (the credential and its
encodings, and the placeholder as the control), the command that runs tests/credential_search.py
in the container, and what its findings must say."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

PLACEHOLDER = "agent-worker-credential-placeholder"  # what the agent holds instead
SEARCH = Path(__file__).parent / "credential_search.py"


def encodings(secret: str) -> dict[str, str]:
    """The secret and the forms it could leave in: base64 at each of its three alignments (the
    part that does not depend on its neighbours), urlsafe base64, hex."""
    forms = {"plain": secret, "hex": secret.encode().hex()}
    for shift in range(3):
        data = b"\0" * shift + secret.encode()
        for kind, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            text = encode(data).decode().rstrip("=")
            forms[f"{kind}{shift}"] = text[4:-4]  # clear of the padding's influence
    return forms


def search_command(out: str, secret: str) -> str:
    forms = encodings(secret) | {"placeholder": PLACEHOLDER}
    needles = [f"{k}={v[::-1]}" for k, v in forms.items()]  # reversed: see credential_search
    return shlex.join(["python3", "/workspace/credential_search.py", out, *needles])


def assert_found_nothing(found: dict[str, list[str]], *, memory: bool = True) -> None:
    """The control was found where the agent holds it; no form of the credential anywhere.
    memory: whether processes' memory is readable (/proc/PID/mem; gVisor serves no reads of
    it, to the search or to anyone)."""
    # (Claude Code keeps a subscription token out of its tools' environment: the agent's own
    # process holds it)
    assert any(w.endswith("/environ") for w in found["placeholder"]), found["placeholder"]
    if memory:
        assert any(w.endswith("/mem") for w in found["placeholder"]), found["placeholder"]
    assert found["unreadable"], "root's processes (the gate among them) must be unreadable"
    leaks = {k: v for k, v in found.items() if k not in ("placeholder", "unreadable") and v}
    assert leaks == {}
