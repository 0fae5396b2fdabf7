"""The real Pulumi engine for the tests: the CLI that tools/setup.sh installs, run on a copy
of the project (so stack init and config set never touch the repository's stack files),
with its own file backend and passphrase."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from previews.comment import read_events

ROOT = Path(__file__).resolve().parents[1]
# what a run needs of the project; tests, docs and the VCS stay out of the copy
PROJECT_FILES = ["Pulumi.yaml", "__main__.py", "components", "images", "localcloud", "policies", "stacks",
                 "requirements.txt"]


def pinned_version() -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("pulumi=="):
            return line.removeprefix("pulumi==").strip()
    raise AssertionError("requirements.txt pins no pulumi==VERSION")


def require_cli() -> str:
    """The pulumi on PATH, which must be the pinned version: a missing or different engine
    is a failed set-up, not a reason to skip."""
    cli = shutil.which("pulumi")
    assert cli, "pulumi is not on PATH: run tools/setup.sh, then . tools/env.sh (tools/test.sh does both)"
    version = subprocess.run([cli, "version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == f"v{pinned_version()}", f"pulumi on PATH is {version}, the project pins {pinned_version()}"
    return cli


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


@dataclass
class Preview:
    run: Run
    events: list[dict]

    def of_kind(self, kind: str) -> list[dict]:
        return [e[kind] for e in self.events if kind in e]

    def steps(self, op: Optional[str] = None) -> list[dict]:
        return [p["metadata"] for p in self.of_kind("resourcePreEvent") if op in (None, p["metadata"]["op"])]

    def count(self, resource_type: str, op: str = "create") -> int:
        return sum(1 for step in self.steps(op) if step["type"] == resource_type)

    @property
    def violations(self) -> list[dict]:
        return self.of_kind("policyEvent")

    @property
    def errors(self) -> list[str]:
        return [d["message"] for d in self.of_kind("diagnosticEvent") if d.get("severity") == "error"]

    @property
    def policies_passed(self) -> set[str]:
        return {name for kind in ("policyAnalyzeSummaryEvent", "policyAnalyzeStackSummaryEvent")
                for summary in self.of_kind(kind) for name in summary.get("passed") or []}


def _config_paths(key: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _config_paths(f"{key}.{k}", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _config_paths(f"{key}[{i}]", v)]
    return [(key, str(value))]


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Engine:
    """`pulumi` in a project copy, on a backend of its own."""

    workdir: Path
    backend: Path
    passphrase: str = field(default_factory=lambda: secrets.token_hex(16))

    @classmethod
    def in_tmp(cls, tmp: Path, **kwargs) -> "Engine":
        require_cli()
        backend = tmp / "state"
        backend.mkdir(parents=True)
        return cls(copy_project(tmp / "project"), backend, **kwargs)

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
        env.update(PULUMI_BACKEND_URL=f"file://{self.backend}", PULUMI_CONFIG_PASSPHRASE=self.passphrase,
                   PULUMI_SKIP_UPDATE_CHECK="true", PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
                   PULUMI_HOME=os.environ.get("PULUMI_HOME", str(Path.home() / ".pulumi")),
                   NO_COLOR="1")
        return env

    def run(self, *args: str, check: bool = True, stdin: Optional[str] = None, timeout: float = 1800,
            env: Optional[dict] = None) -> Run:
        argv = ["pulumi", "--non-interactive", "--color", "never", *args]
        start = time.monotonic()
        result = subprocess.run(argv, cwd=self.workdir, env={**self.env, **(env or {})}, input=stdin,
                                capture_output=True, text=True, timeout=timeout)
        run = Run(argv, result.returncode, result.stdout, result.stderr, time.monotonic() - start)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{run.output[-6000:]}")
        return run

    def init(self, stack: str, config: Optional[dict] = None, secrets_: Optional[dict] = None) -> None:
        self.run("stack", "init", stack)
        for key, value in (config or {}).items():
            self.set(stack, key, value)
        for key, value in (secrets_ or {}).items():
            self.run("config", "set", "--stack", stack, "--secret", key, stdin=value)

    def set(self, stack: str, key: str, value) -> None:
        """A config value; lists and objects go in item by item with `--path`, as a user
        types them (`pulumi config set --path 'dockyard:adminCidrs[0]' ...`)."""
        self.run("config", "rm", "--stack", stack, key, check=False)
        for path, item in _config_paths(key, value):
            self.run("config", "set", "--stack", stack, "--path", path, "--", item)

    def preview(self, stack: str, *extra: str, check: bool = True) -> Preview:
        """`pulumi preview --json` as a pull request's pipeline runs it: the engine's event
        stream, one JSON event per line (PULUMI_ENABLE_STREAMING_JSON_PREVIEW)."""
        run = self.run("preview", "--stack", stack, "--json", *extra, check=False,
                       env={"PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "true"})
        preview = Preview(run, read_events(run.stdout))
        if check and run.returncode != 0:
            raise AssertionError(f"preview of {stack} failed: {preview.errors}\n{run.stderr[-3000:]}")
        return preview

    def outputs(self, stack: str, show_secrets: bool = False) -> dict:
        args = ["stack", "output", "--stack", stack, "--json"] + (["--show-secrets"] if show_secrets else [])
        return json.loads(self.run(*args).stdout)

    def export(self, stack: str, show_secrets: bool = False) -> str:
        return self.run("stack", "export", "--stack", stack, *(["--show-secrets"] if show_secrets else [])).stdout
