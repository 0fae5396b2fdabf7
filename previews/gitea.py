"""Post a preview comment on a Gitea pull request, replacing that stack's previous one.
Run from a Drone step: Drone sets DRONE_REPO_LINK, DRONE_REPO and DRONE_PULL_REQUEST; the
token comes from a Drone secret in GITEA_TOKEN and goes in a header, never in argv.

    python3 -m previews.gitea previews/out/small.md small"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .comment import marker

Http = Callable[[str, str, Optional[dict]], object]


def api_base(repo_link: str, repo: str) -> str:
    """Gitea's API root from the repository's web link (http://host:3000/owner/repo)."""
    link = repo_link.rstrip("/")
    if not link.endswith("/" + repo):
        raise ValueError(f"{repo_link} does not end with the repository {repo}")
    return link[: -len(repo) - 1] + "/api/v1"


def upsert_comment(http: Http, base: str, repo: str, number: int, stack: str, body: str) -> str:
    """Edit the stack's last preview comment, or add one. Returns what was done."""
    comments = http("GET", f"{base}/repos/{repo}/issues/{number}/comments", None) or []
    mine = [c for c in comments if str(c.get("body", "")).startswith(marker(stack))]
    if mine:
        http("PATCH", f"{base}/repos/{repo}/issues/comments/{mine[-1]['id']}", {"body": body})
        return f"updated comment {mine[-1]['id']}"
    http("POST", f"{base}/repos/{repo}/issues/{number}/comments", {"body": body})
    return "added a comment"


def token_http(token: str) -> Http:
    def http(method: str, url: str, payload: Optional[dict]):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"token {token}", "Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return json.loads(text) if text else None
    return http


def main(argv: list[str]) -> int:
    path, stack = argv
    env = os.environ
    base = api_base(env["DRONE_REPO_LINK"], env["DRONE_REPO"])
    done = upsert_comment(token_http(env["GITEA_TOKEN"]), base, env["DRONE_REPO"], int(env["DRONE_PULL_REQUEST"]),
                          stack, Path(path).read_text())
    print(f"previews: {stack}: {done}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
