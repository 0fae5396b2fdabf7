"""Which stacks a change needs previews of: a stack file touches its stack; the program,
its dependencies or the policy pack touch every cloud stack; tests and docs touch none.

    git diff --name-only origin/main... | python3 -m previews.touched [--plain]
prints a JSON list of stack names (a GitHub Actions matrix), or with --plain one per line."""
from __future__ import annotations

import json
import re
import sys

from components.topology import TIERS

# the stacks that run in a cloud, one per tier; `local` runs on the developer's machine, not in CI
CLOUD_STACKS = TIERS
PROGRAM = re.compile(r"^(__main__\.py|Pulumi\.yaml|requirements\.txt|components/.*|policies/.*)$")
STACK_FILE = re.compile(r"^stacks/Pulumi\.([A-Za-z0-9_.-]+)\.yaml$")


def touched_stacks(paths: list[str]) -> list[str]:
    stacks: set[str] = set()
    for path in paths:
        path = path.strip()
        if PROGRAM.match(path):
            stacks.update(CLOUD_STACKS)
        elif match := STACK_FILE.match(path):
            if match.group(1) in CLOUD_STACKS:
                stacks.add(match.group(1))
    return [s for s in CLOUD_STACKS if s in stacks]


def main(argv: list[str]) -> int:
    stacks = touched_stacks([line for line in sys.stdin.read().splitlines() if line.strip()])
    print("\n".join(stacks) if "--plain" in argv else json.dumps(stacks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
