"""How long the local stack takes, on this machine, through the real engine: a benchmark,
not a test (nothing here passes or fails on a time). Prints the median of N runs of each
measure beside the figures measured before warm boots, and writes them as JSON.

    sudo -E .venv/bin/python tools/bench.py [--runs 3] [--only first-up,scale-up] [--out bench.json]

Measures (each on its own network, one VM run at a time):
  cold-vm    one VM from nothing to SSH, booting the base image (DOCKYARD_WARM_BOOT=0)
  warm-vm    one VM from nothing to SSH, restored from its warm template
  first-up   `pulumi up` of the local stack (default tier, 1 worker: 3 VMs); destroyed after
  scale-up   `pulumi up` after `dockyard:workers` 0 -> 1 on a running stack (2 VMs + 1)
  cicd-up    `pulumi up` of the CI/CD stack (Gitea, Drone, registry; 2 VMs, 1.2 GB of images)

The warm template of each size and image set is made before the first timed run (its time
is printed apart): a user pays it once per base image recipe, not per `up`."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.hosts.local import VM_MEMORY_MB  # noqa: E402
from tests.e2e.stack import LocalStack  # noqa: E402
from tests.engine import Engine  # noqa: E402

# measured before warm boots (README "Measured"; issue 18), seconds
BEFORE = {"cold-vm": 80, "warm-vm": None, "first-up": 226, "scale-up": 123, "cicd-up": 680}
MEASURES = list(BEFORE)
LOCALCLOUD = [sys.executable, "-m", "localcloud"]


def localcloud(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LOCALCLOUD, *args], cwd=ROOT, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def one_vm(warm: bool, key: str) -> float:
    net = "bench"
    localcloud("cleanup", "--net", net)
    localcloud("network-up", "--net", net, "--cidr", "10.235.0.0/24")
    try:
        return timed(lambda: localcloud("create", "--net", net, "--name", "bench-vm", "--address", "10.235.0.11/24",
                                        "--memory", str(VM_MEMORY_MB), "--wait", "900", "--key", key,
                                        env={"DOCKYARD_WARM_BOOT": "1" if warm else "0"}))
    finally:
        localcloud("cleanup", "--net", net)


def stack_of(tmp: Path, net: str, config: dict) -> LocalStack:
    subprocess.run([*LOCALCLOUD, "cleanup", "--net", net], cwd=ROOT, check=True, capture_output=True)
    engine = Engine.in_tmp(Path(tempfile.mkdtemp(dir=tmp)))
    return LocalStack.create(engine, net, config)


def first_up(tmp: Path) -> float:
    stack = stack_of(tmp, "bench", {"cloud": "local", "tier": "default", "workers": "1", "vpcCidr": "10.235.0.0/24"})
    try:
        return timed(stack.up)
    finally:
        stack.destroy()


def scale_up(tmp: Path, runs: int) -> list[float]:
    stack = stack_of(tmp, "bench", {"cloud": "local", "tier": "default", "workers": "0", "vpcCidr": "10.235.0.0/24"})
    times = []
    try:
        stack.up()
        for _ in range(runs):
            stack.set("workers", "1")
            times.append(timed(stack.up))
            stack.set("workers", "0")
            stack.up()
    finally:
        stack.destroy()
    return times


def ci_images(tmp: Path) -> tuple[dict, list[str]]:
    """The CI/CD images (built once, then cached) and their warm template, made untimed."""
    images = Path(tempfile.mkdtemp(dir=tmp))
    built = localcloud("ci-images", "--out", str(images))
    settings = json.loads(built.stdout.strip().splitlines()[-1])
    archives = [str(images / f"{n}.tar") for n in ("gitea", "drone", "drone-runner", "drone-pipeline", "busybox")]
    made = timed(lambda: localcloud("template", "--memory", str(VM_MEMORY_MB), *[f"--bake={a}" for a in archives]))
    print(f"template with the CI/CD images: {made:.0f} s (0 when it exists)", flush=True)
    return settings, archives


def cicd_up(tmp: Path, settings: dict, archives: list[str]) -> float:
    stack = stack_of(tmp, "benchci", {"cloud": "local", "tier": "default", "workers": "0", "vpcCidr": "10.236.0.0/24",
                                      "ciServices": ["registry", "gitea", "drone"], "ciImages": settings,
                                      "preloadImages": archives})
    try:
        return timed(stack.up)
    finally:
        stack.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated, of {', '.join(MEASURES)}")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run it as root (network namespaces, tap devices)")
    only = [m for m in args.only.split(",") if m]
    unknown = set(only) - set(MEASURES)
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
        key = (tmp / "key.pub").read_text().strip()
        print(f"template for {VM_MEMORY_MB} MiB: {timed(lambda: localcloud('template', '--memory', str(VM_MEMORY_MB))):.0f} s "
              f"(0 when it exists)", flush=True)
        results: dict[str, list[float]] = {}
        for measure in only:
            if measure == "scale-up":
                results[measure] = scale_up(tmp, args.runs)
            else:
                ci = ci_images(tmp) if measure == "cicd-up" else None
                run = {"cold-vm": lambda: one_vm(False, key), "warm-vm": lambda: one_vm(True, key),
                       "first-up": lambda: first_up(tmp), "cicd-up": lambda: cicd_up(tmp, *ci)}[measure]
                results[measure] = [run() for _ in range(args.runs)]
            print(f"{measure}: {', '.join(f'{t:.0f}' for t in results[measure])} s", flush=True)
    print(f"\n{'measure':<10} {'median':>8} {'before':>8}   runs")
    for measure, times in results.items():
        before = BEFORE[measure]
        print(f"{measure:<10} {statistics.median(times):>7.0f}s {before if before else '-':>7}{'s' if before else ' '}   "
              f"{', '.join(f'{t:.0f}' for t in times)}")
    Path(args.out).write_text(json.dumps({"runs": args.runs, "results": results, "before": BEFORE}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
