"""--pr: after the run, from the host, the branch pushed and a draft pull request opened (or its
body brought up to date) with the run's report as its body.

Decided before any container starts (prepare): the remote, the branch the pull request goes
into, the forge, and what cannot work (a detached HEAD without --pr-base, a GitHub repository
with no token to be found): a usage error, nothing made. After the run (finish), with the
container gone: the push (GitLab: with its merge_request.* push options, so the push itself
opens the merge request with no token beyond the push's), then GitHub's REST API with the
user's token, read only now and only here. Nothing of it ever reaches a container. A pull
request that cannot be opened is a warning naming why and how to open it by hand; the run's
exit code stays its own.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import ci_outputs, forge, git_manager, github_api
from agent_worker_app.errors import UsageError
from agent_worker_app.report import RunReport, render_json

if TYPE_CHECKING:
    from agent_worker_app.config import Config
    from agent_worker_app.console import ProgressSink, Redactor
    from agent_worker_app.follow_up import Continuation
    from agent_worker_app.git_manager import Workspace

# what GitLab prints for the merge request a push made or updated
_MR_URL = re.compile(r"https?://\S+/-?/?merge_requests/\d+")
OPTION_LIMIT = 4000  # characters of a merge request's description sent as a push option


@dataclass(frozen=True)
class Target:
    """Where a run's pull request goes, as decided before the run."""

    request: forge.Request
    remote: str  # a remote's name, URL or path (what --push takes)
    base: str
    repo: forge.Repository | None
    provider: str | None  # github, gitlab, None: only a compare URL, where one can be made
    gitlab_update: bool = False  # --continue of a branch whose merge request exists


def prepare(
    cfg: Config,
    ws: Workspace,
    remote: str,
    *,
    environ: Mapping[str, str],
    continuation: Continuation | None = None,
) -> Target:
    """--pr's target, checked now: UsageError (exit 2) for what cannot work."""
    request = cfg.pull_request
    assert request is not None, "only with --pr"
    base = request.base or git_manager.current_branch(ws.root)
    if base is None:
        raise UsageError(
            "--pr: the repository is on a detached HEAD, so no branch is there for the pull "
            "request to go into: give --pr-base BRANCH"
        )
    urls = git_manager.remote_urls(ws.root, remote)
    repo = next((found for url in urls if (found := forge.parse_remote(url))), None)
    provider = forge.provider_of(repo, request.provider, environ)
    if provider == "github" and repo is None:
        raise UsageError(
            f"--pr: cannot tell the GitHub repository (owner/name) from the URL of {remote}: "
            "push to a remote whose URL names it"
        )
    if provider == "github" and repo is not None:
        forge.github_api_url(repo, environ)  # a GITHUB_API_URL that is no URL: refused now
    if provider == "github" and not github_api.token_may_exist(environ):
        raise UsageError(
            "--pr: no GitHub token: set GITHUB_TOKEN or GH_TOKEN (a token that may create "
            "pull requests), or log in with gh (gh auth login)"
        )
    update = continuation is not None and _had_merge_request(Path(continuation.previous.run_dir))
    return Target(request, remote, base, repo, provider, gitlab_update=update)


def _had_merge_request(run_dir: Path) -> bool:
    try:
        made = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    opened = made.get("pull_request") if isinstance(made, dict) else None
    return isinstance(opened, dict) and opened.get("provider") == "gitlab"


def wanted(target: Target, report: RunReport) -> bool:
    """Whether the run's branch goes up: a success, or with --pr-on-failure a failed or timed
    out run that left commits (an interrupted one was stopped by its user)."""
    if report.status == "success":
        return report.branch is not None
    made_commits = report.head_commit is not None and report.head_commit != report.base_commit
    return (
        target.request.on_failure
        and report.status in ("failed", "timeout")
        and report.branch is not None
        and made_commits
    )


def finish(
    target: Target,
    report: RunReport,
    ws: Workspace,
    *,
    progress: ProgressSink,
    redactor: Redactor,
    environ: Mapping[str, str],
    push_ci: bool,
    others: Sequence[RunReport] = (),
) -> RunReport:
    """The branch pushed and its pull request opened or updated, as wanted(); the report says
    where (pushed_to, pull_request) and why not (a warning), and is written again."""
    if not wanted(target, report):
        return report
    assert report.branch is not None
    said = _Said(progress, report, redactor)
    branch_ws = replace(ws, branch=report.branch)
    title = forge.title(_task(report), report.branch)
    options = _gitlab_options(target, title, report) if target.provider == "gitlab" else ()
    progress.phase(f"Pushing branch {report.branch} to {target.remote}")
    pushed = git_manager.push(branch_ws, target.remote, skip_ci=not push_ci, options=options)
    compare = forge.compare_url(target.repo, target.provider, target.base, report.branch)
    if pushed.problem is not None:
        retry = shlex.join(
            git_manager.push_command(
                branch_ws, target.remote, skip_ci=pushed.skip_ci, options=pushed.options
            )
        )
        said.warn(
            f"the push to {target.remote} failed ({pushed.problem}); the branch is only local "
            f"and no pull request was opened: retry with {retry}"
        )
        return _written(report)
    report.pushed_to = target.remote
    said.note(f"pushed branch {report.branch} to {target.remote}")
    if not push_ci and not pushed.skip_ci:
        said.note(
            f"{target.remote} takes no push options: pushed without ci.skip, "
            "so its CI may run the branch's pipeline"
        )
    if report.head_commit is None or report.head_commit == report.base_commit:
        said.note("the agent made no commits: no pull request to open")
        return _written(report)
    if target.provider == "gitlab":
        report.pull_request = _gitlab(target, pushed, compare, said)
    elif target.provider == "github":
        body = ci_outputs.pull_request_body(report, others=others)
        report.pull_request = _github(
            target,
            report.branch,
            title=title,
            body=body,
            compare=compare,
            environ=environ,
            said=said,
        )
    elif compare is not None:
        said.note(f"open the pull request at {compare}")
        report.pull_request = forge.Opened(None, "compare", target.base, compare_url=compare)
    else:
        said.warn(
            f"no pull request could be opened: {target.remote} is not on GitHub or GitLab "
            "(for a server of your own, say which with --pr-provider github|gitlab)"
        )
    return _written(report)


@dataclass(frozen=True)
class _Said:
    """Notes and warnings of the step: on the progress stream, warnings in the report too."""

    progress: ProgressSink
    report: RunReport
    redactor: Redactor

    def note(self, text: str) -> None:
        self.progress.note(self.redactor.text(text))

    def warn(self, text: str) -> None:
        text = self.redactor.text(text)
        self.progress.warn(text)
        self.report.warnings.append(text)


def _task(report: RunReport) -> str:
    if not report.run_dir:
        return ""
    try:
        return (Path(report.run_dir) / "task.md").read_text(encoding="utf-8")
    except OSError:
        return ""


def _written(report: RunReport) -> RunReport:
    if report.run_dir:
        (Path(report.run_dir) / "report.json").write_text(render_json(report), encoding="utf-8")
    return report


# ---------------------------------------------------------------- GitLab: push options


def _gitlab_options(target: Target, title: str, report: RunReport) -> tuple[str, ...]:
    """GitLab's merge request push options: made (unless the branch has one), into the base,
    a draft, its title and a one-line description (a push option holds no line break)."""
    description = ci_outputs.one_line(report)[:OPTION_LIMIT]
    made = () if target.gitlab_update else ("merge_request.create", "merge_request.draft")
    return (
        *made,
        f"merge_request.target={target.base}",
        f"merge_request.title={title}",
        f"merge_request.description={description}",
    )


def _gitlab(
    target: Target, pushed: git_manager.Pushed, compare: str | None, said: _Said
) -> forge.Opened | None:
    if not pushed.options:
        by_hand = f": open it at {compare}" if compare else ""
        said.warn(f"no merge request was opened: {target.remote} takes no push options{by_hand}")
        return None
    url = next((m.group(0) for line in pushed.remote_said if (m := _MR_URL.search(line))), None)
    action = "updated" if target.gitlab_update else "opened"
    if url is None:
        said.note(f"asked {target.remote} to open a merge request into {target.base}")
        return forge.Opened("gitlab", "requested", target.base, compare_url=compare)
    said.note(f"merge request {action}: {url}")
    return forge.Opened("gitlab", action, target.base, url=url, compare_url=compare)


# ---------------------------------------------------------------- GitHub: the REST API


def _github(
    target: Target,
    branch: str,
    *,
    title: str,
    body: str,
    compare: str | None,
    environ: Mapping[str, str],
    said: _Said,
) -> forge.Opened | None:
    repo = target.repo
    assert repo is not None, "prepare() checked it"
    by_hand = (
        f"open it with: gh pr create --draft --repo {shlex.quote(repo.host + '/' + repo.path)} "
        f"--base {shlex.quote(target.base)} --head {shlex.quote(branch)} --fill"
        + (f", or at {compare}" if compare else "")
    )
    token = github_api.token(environ, repo.host)
    if token is None:
        said.warn(f"no pull request was opened: no GitHub token was found; {by_hand}")
        return None
    said.redactor.add(token)
    client = github_api.Client(forge.github_api_url(repo, environ), repo.owner, repo.name, token)
    try:
        found = client.find_open(branch)
        if found is not None:
            made = client.update_body(found.number, body)
            action = "updated"
        else:
            made = client.open_draft(head=branch, base=target.base, title=title, body=body)
            action = "opened"
    except github_api.ApiError as exc:
        said.warn(f"no pull request was opened: {exc}; {by_hand}")
        return None
    said.note(f"pull request {action}: {made.url or '#' + str(made.number)}")
    return forge.Opened(
        "github", action, target.base, url=made.url, number=made.number, compare_url=compare
    )
