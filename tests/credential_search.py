"""What a hostile agent (or a project's command) does to find the run's credential: run inside
the agent's container as the agent user, it searches its environment, every process's environment,
command line and readable memory, and every file it can read, for the needles given (a credential
and its encodings, and a control that must be found: the placeholder the agent holds).

    python3 credential_search.py OUT.json NAME=EULAV...

Each needle's value comes reversed, so that the search's own command line (and the files and
memory that hold it: the agent's session, the maintenance command) never holds it; the search's
own process is not searched. OUT.json: {NAME: [where it was found, ...]} and "unreadable": the
processes whose memory it could not read. Standard library only (the container's python3)."""

import json
import os
import sys


def main() -> None:
    out = sys.argv[1]
    needles = {name: value[::-1] for name, value in (a.split("=", 1) for a in sys.argv[2:])}
    found: dict[str, set[str]] = {name: set() for name in needles}

    def look(where: str, data: bytes) -> None:
        for name, value in needles.items():
            if value.encode() in data:
                found[name].add(where)

    look("environment", b"\0".join(f"{k}={v}".encode() for k, v in os.environ.items()))
    unreadable = []
    own = str(os.getpid())
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and p != own):
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as file:
                    look(f"/proc/{pid}/{part}", file.read())
            except OSError:
                pass
        try:
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
                for line in maps.read().splitlines():
                    fields = line.split()
                    span, perms = fields[:2]
                    start, end = (int(x, 16) for x in span.split("-"))
                    # the process's own memory (heap, stack, anonymous maps), not the files it
                    # maps (the image's programs and libraries, searched below as files)
                    mapped = len(fields) > 5 and not fields[5].startswith("[")
                    if "r" not in perms or mapped or end - start > 1 << 30:
                        continue
                    try:
                        mem.seek(start)
                        look(f"/proc/{pid}/mem", mem.read(end - start))
                    except (OSError, ValueError, OverflowError):
                        pass
        except OSError:
            unreadable.append(pid)
    for root, dirs, files in os.walk("/"):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr")]
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path) or path == out:
                    continue
                with open(path, "rb") as file:
                    look(path, file.read(64 * 1024 * 1024))
            except OSError:
                pass
    report = {name: sorted(where) for name, where in found.items()}
    report["unreadable"] = unreadable
    with open(out, "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main()
