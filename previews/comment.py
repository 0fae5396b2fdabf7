"""Render a `pulumi preview` into the short markdown comment a pull request gets: what is
created, changed, replaced and deleted, the policy violations, and the errors.

It reads the engine's event stream, which `pulumi preview --json` prints one JSON event per
line when PULUMI_ENABLE_STREAMING_JSON_PREVIEW is set: `resourcePreEvent` for each step (op,
urn, the changed properties in `diffs`, a replacement's in `keys`), `policyEvent` for each
violation, `diagnosticEvent` for errors and `summaryEvent` for the counts. (The plain `--json`
digest leaves the policy events out, and pulumi 3.259 has no `--event-log` for preview.)

    PULUMI_ENABLE_STREAMING_JSON_PREVIEW=true pulumi preview --stack small --json > events.jsonl
    python3 -m previews.comment --stack small events.jsonl
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


def _of_kind(events: Iterable[dict], kind: str) -> list[dict]:
    return [event[kind] for event in events if kind in event]


def changes(events: Iterable[dict]) -> list[Change]:
    found = []
    for pre in _of_kind(events, "resourcePreEvent"):
        step = pre.get("metadata") or {}
        op = step.get("op", "")
        if op not in OPS:
            continue
        typ, name = parse_urn(step.get("urn", ""))
        if typ == "pulumi:pulumi:Stack":
            continue
        # a replacement names the properties that force it in `keys` when the provider
        # says so; otherwise every changed property is shown
        reasons = (step.get("keys") if op == "replace" else None) or step.get("diffs")
        found.append(Change(op, name, typ, tuple(reasons or ())))
    return found


def policy_violations(events: Iterable[dict]) -> list[dict]:
    return _of_kind(events, "policyEvent")


def errors(events: Iterable[dict]) -> list[str]:
    return [" ".join(str(d.get("message", "")).split())
            for d in _of_kind(events, "diagnosticEvent") if d.get("severity") == "error"]


def summary(events: Iterable[dict]) -> dict:
    found = _of_kind(events, "summaryEvent")
    return (found[-1].get("resourceChanges") or {}) if found else {}


def by_type(found: Iterable[Change]) -> list[tuple[str, str]]:
    """(type, "N to create, M to update") for each type with changes, by type."""
    per_type: dict[str, Counter] = {}
    for change in found:
        per_type.setdefault(change.type, Counter())[change.op] += 1
    return [(typ, ", ".join(f"{ops[op]} {VERBS[op]}" for op in OPS if ops[op]))
            for typ, ops in sorted(per_type.items())]


def marker(stack: str) -> str:
    """An invisible first line, so that a new preview replaces the stack's last comment."""
    return f"<!-- dockyard-preview:{stack} -->"


def render(stack: str, events: list[dict]) -> str:
    """The markdown comment for one stack's preview."""
    found = changes(events)
    counts = Counter(c.op for c in found)
    violations = policy_violations(events)
    failures = errors(events)

    lines = [marker(stack), f"### `pulumi preview` of stack `{stack}`", ""]
    totals = [f"{counts[op]} {VERBS[op]}" for op in OPS if counts[op]]
    unchanged = summary(events).get("same", 0)
    if totals:
        lines.append("**" + ", ".join(totals) + "**" + (f", {unchanged} unchanged" if unchanged else ""))
    elif failures:
        lines.append("**The preview failed** (see the errors below).")
    else:
        lines.append("**No changes**" + (f" ({unchanged} resources unchanged)" if unchanged else ""))
    if counts["replace"] or counts["delete"]:
        lines += ["", "> :warning: This change replaces or deletes resources; check that no data lives on them."]

    if found:
        # whole, where the table below may be cut: how many droplets, volumes and firewalls
        # the change makes is what a reviewer compares with table 5.1
        lines += ["", "#### By type", ""]
        lines += [f"- `{typ}`: {text}" for typ, text in by_type(found)]

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
            typ, name = parse_urn(v.get("resourceUrn") or "")
            if not v.get("resourceUrn") or typ == "pulumi:pulumi:Stack":  # a stack policy's
                name = "the stack"
            message = " ".join(str(v.get("message", "")).split())
            lines.append(f"- **{v.get('enforcementLevel', '?')}** `{v.get('policyPackName', '')}/"
                         f"{v.get('policyName', '')}` on `{name}`: {message}")

    if failures:
        lines += ["", "#### Errors", ""]
        lines += [f"- {message}" for message in failures]
    return "\n".join(lines) + "\n"


def read_events(text: str) -> list[dict]:
    """The events of a stream; a line that is not JSON (a crash's own output) is skipped."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


KEPT_EVENTS = ("resourcePreEvent", "policyEvent", "diagnosticEvent", "summaryEvent")


def kept(events: Iterable[dict]) -> list[dict]:
    """What the comment is made of, and all of the stream that may be stored: the SDK's
    debug diagnostics carry the stack's outputs in clear, secrets included (its "register
    resource outputs prepared" line), so they are dropped, and so are the steps' old and new
    states."""
    result = []
    for event in events:
        kind = next((k for k in KEPT_EVENTS if k in event), None)
        if kind is None or (kind == "diagnosticEvent" and event[kind].get("severity") == "debug"):
            continue
        if kind == "resourcePreEvent":
            metadata = {k: v for k, v in event[kind]["metadata"].items() if k not in ("old", "new")}
            event = {kind: {**event[kind], "metadata": metadata}}
        result.append(event)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m previews.comment", description=__doc__.split("\n")[0])
    parser.add_argument("events", help="the event stream of `pulumi preview --json` ('-' for stdin)")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--save", help="also write the events the comment is made of (no secrets) to this file")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.events == "-" else Path(args.events).read_text()
    events = kept(read_events(text))
    if args.save:
        Path(args.save).write_text("".join(json.dumps(e) + "\n" for e in events))
    sys.stdout.write(render(args.stack, events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
