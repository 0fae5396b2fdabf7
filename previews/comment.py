"""Render `pulumi preview --json` into the short markdown comment a pull request gets:
what is created, changed, replaced and deleted, the policy violations, and the errors.

`pulumi preview --json` prints one digest (pulumi/pulumi pkg/display: config, steps with op,
urn, diffReasons, replaceReasons; diagnostics with urn, message, severity; changeSummary).
The digest leaves policy events out, so violations come from the engine's event log
(`--event-log FILE`: one JSON event per line, `policyEvent` entries) when it is given.

    pulumi preview --stack small --json --event-log events.jsonl > preview.json
    python3 -m previews.comment --stack small preview.json --events events.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# Logical operations, in the order a reviewer reads them. "create-replacement" and
# "delete-replaced" are the two halves of a "replace" step and are not counted again.
OPS = ("create", "update", "replace", "delete", "import", "read")
VERBS = {"create": "to create", "update": "to update", "replace": "to replace", "delete": "to delete",
         "import": "to import", "read": "to read"}
SIGNS = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "import": "=", "read": ">"}
MAX_ROWS = 60  # GitHub and Gitea comments stay readable; the rest is counted


@dataclass(frozen=True)
class Change:
    op: str
    name: str
    type: str
    reasons: tuple[str, ...]


def parse_urn(urn: str) -> tuple[str, str]:
    """(type, name) of a URN: urn:pulumi:STACK::PROJECT::PARENT$TYPE::NAME."""
    parts = urn.split("::")
    if len(parts) < 4:
        return "", urn
    return parts[2].split("$")[-1], "::".join(parts[3:])


def changes(digest: dict) -> list[Change]:
    found = []
    for step in digest.get("steps") or []:
        op = step.get("op", "")
        if op not in OPS:
            continue
        typ, name = parse_urn(step.get("urn", ""))
        if typ == "pulumi:pulumi:Stack":
            continue
        reasons = step.get("replaceReasons") if op == "replace" else step.get("diffReasons")
        found.append(Change(op, name, typ, tuple(reasons or ())))
    return found


def policy_violations(events: Iterable[dict]) -> list[dict]:
    found = []
    for event in events:
        policy = event.get("policyEvent")
        if policy:
            found.append(policy)
    return found


def marker(stack: str) -> str:
    """An invisible first line, so that a new preview replaces the stack's last comment."""
    return f"<!-- dockyard-preview:{stack} -->"


def render(stack: str, digest: dict, events: Iterable[dict] = ()) -> str:
    """The markdown comment for one stack's preview."""
    found = changes(digest)
    summary = digest.get("changeSummary") or {}
    counts = Counter(c.op for c in found)
    violations = policy_violations(events)
    errors = [d for d in digest.get("diagnostics") or [] if d.get("severity") == "error"]

    lines = [marker(stack), f"### `pulumi preview` of stack `{stack}`", ""]
    totals = [f"{counts[op]} {VERBS[op]}" for op in OPS if counts[op]]
    unchanged = summary.get("same", 0)
    if totals:
        lines.append("**" + ", ".join(totals) + "**" + (f", {unchanged} unchanged" if unchanged else ""))
    elif errors:
        lines.append("**The preview failed** (see the errors below).")
    else:
        lines.append("**No changes**" + (f" ({unchanged} resources unchanged)" if unchanged else ""))
    if counts["replace"] or counts["delete"]:
        lines += ["", "> :warning: This change replaces or deletes resources; check that no data lives on them."]

    if found:
        lines += ["", "| | Resource | Type | Because of |", "|---|---|---|---|"]
        ordered = sorted(found, key=lambda c: (OPS.index(c.op), c.name))
        for change in ordered[:MAX_ROWS]:
            reasons = ", ".join(f"`{r}`" for r in change.reasons)
            lines.append(f"| `{SIGNS[change.op]}` {change.op} | `{change.name}` | `{change.type}` | {reasons} |")
        if len(ordered) > MAX_ROWS:
            lines.append(f"| | … and {len(ordered) - MAX_ROWS} more | | |")

    if violations:
        mandatory = sum(1 for v in violations if v.get("enforcementLevel") == "mandatory")
        lines += ["", f"#### Policy violations: {mandatory} mandatory, {len(violations) - mandatory} advisory", ""]
        for v in sorted(violations, key=lambda v: (v.get("enforcementLevel") != "mandatory", v.get("policyName", ""))):
            _, name = parse_urn(v.get("resourceUrn", "")) if v.get("resourceUrn") else ("", "the stack")
            message = " ".join(str(v.get("message", "")).split())
            lines.append(f"- **{v.get('enforcementLevel', '?')}** `{v.get('policyPackName', '')}/"
                         f"{v.get('policyName', '')}` on `{name}`: {message}")

    if errors:
        lines += ["", "#### Errors", ""]
        for d in errors:
            message = " ".join(str(d.get("message", "")).split())
            lines.append(f"- {message}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m previews.comment", description=__doc__.split("\n")[0])
    parser.add_argument("preview", help="the output of `pulumi preview --json` ('-' for stdin)")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--events", help="the engine's event log (`pulumi preview --event-log FILE`)")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.preview == "-" else Path(args.preview).read_text()
    events = []
    if args.events and Path(args.events).exists():
        events = [json.loads(line) for line in Path(args.events).read_text().splitlines() if line.strip()]
    sys.stdout.write(render(args.stack, json.loads(text) if text.strip() else {}, events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
