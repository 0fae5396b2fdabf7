"""Previews in pull requests: the comment renderer, which stacks a change touches, the Gitea
poster and the two pipelines that run them.

The fixtures are event streams of the real engine (`pulumi preview --json` with
PULUMI_ENABLE_STREAMING_JSON_PREVIEW), trimmed by `previews.comment --save`:
- preview-local-change.jsonl: the `local` stack, up on VMs, previewed with workers 1 -> 0
  and swarm-labels.sh edited;
- preview-small-policy.jsonl: `small` with its swarm ports opened to the world and a
  worker size off the price list;
- preview-small-bad-config.jsonl: `small` with `dockyard:workers many`.
tests/test_engine_previews.py renders fresh streams of the engine too."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from previews.comment import changes, kept, marker, parse_urn, read_events, render
from previews.gitea import api_base, upsert_comment
from previews.touched import touched_stacks

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def load(name):
    return read_events((FIXTURES / name).read_text())


def test_urns_give_type_and_name():
    urn = "urn:pulumi:small::dockyard::dockyard:index:Cluster$dockyard:role:SwarmWorker$command:remote:Command::w5-x"
    assert parse_urn(urn) == ("command:remote:Command", "w5-x")


def test_the_comment_counts_each_logical_change_once():
    events = load("preview-local-change.jsonl")
    found = changes(events)
    assert sorted({c.op for c in found}) == ["delete", "read", "replace", "update"]
    text = render("local", events)
    assert text.startswith(marker("local") + "\n### `pulumi preview` of stack `local`")
    assert "**1 to update, 1 to replace, 10 to delete, 1 to read**, 35 unchanged" in text
    assert "| `+-` replace | `b-manager-labels` | `command:remote:Command` | `stdin`, `triggers` |" in text
    assert "| `~` update | `a-master-bastion` | `command:remote:Command` | `create` |" in text
    assert text.count("b-manager-labels") == 1, "the replacement's halves are not listed again"
    assert "\n- `command:remote:Command`: 1 to update, 1 to replace, 5 to delete\n" in text.split("#### By type")[1]
    assert "replaces or deletes resources" in text
    assert "dockyard-local" not in text.split("####")[0], "the stack itself is no change"


def test_the_comment_lists_policy_violations_mandatory_first():
    text = render("small", load("preview-small-policy.jsonl"))
    assert "#### Policy violations: 12 mandatory, 0 advisory" in text
    assert "**mandatory** `dockyard/no-control-ports-to-internet` on `do-worker-firewall`: " in text
    assert "on `the stack`: The stack's estimated monthly cost" in text
    advisory = render("local", load("preview-local-change.jsonl"))
    assert "- **advisory** `dockyard/no-workers-warning` on `the stack`: " in advisory
    mixed = render("small", load("preview-small-policy.jsonl") + load("preview-local-change.jsonl"))
    assert mixed.index("**mandatory**") < mixed.index("**advisory**")
    assert "\nClose port" not in text, "messages are kept on one line"


def test_a_failed_preview_shows_its_error_and_no_changes():
    text = render("small", load("preview-small-bad-config.jsonl"))
    assert "**The preview failed**" in text
    assert "- invalid stack configuration: dockyard:workers: expected a whole number, got 'many'" in text
    assert "|---|" not in text


def test_no_changes():
    events = [{"summaryEvent": {"resourceChanges": {"same": 40}}}]
    assert "**No changes** (40 resources unchanged)" in render("default", events)


def test_long_previews_are_cut_with_a_count():
    events = [{"resourcePreEvent": {"metadata": {"op": "create", "urn": f"urn:pulumi:s::dockyard::docker:index/container:Container::c{i}"}}}
              for i in range(75)]
    text = render("medium", events)
    assert "… and 15 more" in text and text.count("| `+` create |") == 60
    assert "- `docker:index/container:Container`: 75 to create" in text, "the counts by type are whole"


def test_what_is_kept_of_a_stream_has_no_debug_output_and_no_states():
    secret = "registry-password-in-a-debug-line"
    stream = [
        {"diagnosticEvent": {"severity": "debug", "message": f"register resource outputs prepared: {secret}"}},
        {"resourcePreEvent": {"metadata": {"op": "create", "urn": "urn:pulumi:s::dockyard::t::n",
                                           "new": {"inputs": {"password": secret}}}}},
        {"resOutputsEvent": {"metadata": {"new": {"outputs": {"password": secret}}}}},
        {"diagnosticEvent": {"severity": "error", "message": "boom"}},
    ]
    saved = json.dumps(kept(stream))
    assert secret not in saved and "boom" in saved and "urn:pulumi:s::dockyard::t::n" in saved


def test_the_cli_reads_a_stream_and_saves_what_it_kept(tmp_path, capsys):
    from previews.comment import main

    saved = tmp_path / "kept.jsonl"
    assert main(["--stack", "small", str(FIXTURES / "preview-small-policy.jsonl"), "--save", str(saved)]) == 0
    assert "Policy violations" in capsys.readouterr().out
    assert load("preview-small-policy.jsonl") == read_events(saved.read_text())


@pytest.mark.parametrize("paths,stacks", [
    (["README.md", "tests/test_cicd.py"], []),
    (["stacks/Pulumi.small.yaml"], ["small"]),
    (["stacks/Pulumi.local.yaml"], []),
    (["stacks/Pulumi.medium.yaml", "stacks/Pulumi.minimal.yaml"], ["minimal", "medium"]),
    (["components/cicd.py"], ["minimal", "default", "small", "medium"]),
    (["policies/dockyard_policies.py"], ["minimal", "default", "small", "medium"]),
    (["requirements.txt"], ["minimal", "default", "small", "medium"]),
])
def test_touched_stacks(paths, stacks):
    assert touched_stacks(paths) == stacks


def test_gitea_comments_replace_the_stacks_previous_one():
    calls = []
    existing = [{"id": 7, "body": marker("small") + "\nold"}, {"id": 9, "body": marker("medium") + "\nold"}]

    def http(method, url, payload):
        calls.append((method, url, payload))
        return existing if method == "GET" else {}

    base = api_base("http://10.0.0.2:3000/ops/platform", "ops/platform")
    assert base == "http://10.0.0.2:3000/api/v1"
    assert upsert_comment(http, base, "ops/platform", 4, "small", "new") == "updated comment 7"
    assert calls[-1] == ("PATCH", f"{base}/repos/ops/platform/issues/comments/7", {"body": "new"})
    assert upsert_comment(http, base, "ops/platform", 4, "default", "new") == "added a comment"
    assert calls[-1] == ("POST", f"{base}/repos/ops/platform/issues/4/comments", {"body": "new"})
    with pytest.raises(ValueError):
        api_base("http://10.0.0.2:3000/other/repo", "ops/platform")


def test_the_github_workflow_previews_touched_stacks_and_never_changes_them():
    workflow = yaml.safe_load((ROOT / ".github/workflows/preview.yml").read_text())
    assert "pull_request" in workflow[True]  # yaml reads the key `on` as True
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    text = (ROOT / ".github/workflows/preview.yml").read_text()
    assert "python3 -m previews.touched" in text and "-m previews.comment" in text
    assert "pulumi preview --stack ${{ matrix.stack }}" in text and "--policy-pack policies" in text
    assert "pulumi up" not in text and "pulumi destroy" not in text
    steps = workflow["jobs"]["preview"]["steps"]
    pulumi_action = next(s for s in steps if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert "command" not in pulumi_action.get("with", {}), "the action only installs the CLI"
    job = workflow["jobs"]["preview"]
    assert job["environment"] == "preview", "secrets only after the environment's reviewers approve"
    assert list(workflow[True]) == ["pull_request"], "never pull_request_target: forks get no secret"
    expected = {"PULUMI_BACKEND_URL": "PREVIEW_PULUMI_BACKEND_URL",
                "PULUMI_CONFIG_PASSPHRASE": "PREVIEW_PULUMI_CONFIG_PASSPHRASE",
                "DIGITALOCEAN_TOKEN": "DIGITALOCEAN_READ_TOKEN", "AWS_ACCESS_KEY_ID": "PREVIEW_AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "PREVIEW_AWS_SECRET_ACCESS_KEY"}
    secrets = {k: v for k, v in job["env"].items() if "secrets." in str(v)}
    assert secrets == {name: "${{ secrets.%s }}" % secret for name, secret in expected.items()}, \
        "only preview-only credentials: no write token, not the production state's passphrase"


def test_the_drone_pipeline_runs_the_same_previews_on_pull_requests():
    pipeline = yaml.safe_load((ROOT / ".drone.yml").read_text())
    assert pipeline["trigger"]["event"] == ["pull_request"]
    (step,) = pipeline["steps"]
    secrets = {k: v["from_secret"] for k, v in step["environment"].items() if isinstance(v, dict)}
    assert secrets == {"PULUMI_BACKEND_URL": "preview_pulumi_backend_url",
                       "PULUMI_CONFIG_PASSPHRASE": "preview_pulumi_config_passphrase",
                       "DIGITALOCEAN_TOKEN": "digitalocean_read_token", "GITEA_TOKEN": "gitea_token"}
    assert step["commands"][-1] == "bash previews/run.sh"
    assert "previews.gitea" in (ROOT / "previews/run.sh").read_text()


def test_touched_prints_a_matrix_or_plain_lines(monkeypatch, capsys):
    import io

    from previews.touched import main

    for argv, expected in (([], '["small"]\n'), (["--plain"], "small\n")):
        monkeypatch.setattr("sys.stdin", io.StringIO("stacks/Pulumi.small.yaml\nREADME.md\n"))
        assert main(argv) == 0
        assert capsys.readouterr().out == expected


ACTIONLINT = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"


def actionlint() -> str:
    """actionlint, built once from the Go module proxy into the project's cache."""
    from localcloud.system import CACHE

    binary = CACHE / "ci-bin" / f"actionlint-{ACTIONLINT.rsplit('@', 1)[1]}" / "actionlint"
    if not binary.exists():
        assert shutil.which("go"), "actionlint is built with Go: install it (tools/setup.sh lists it)"
        subprocess.run(["go", "install", ACTIONLINT], check=True, capture_output=True,
                       env={**os.environ, "GOBIN": str(binary.parent), "GOFLAGS": "-mod=mod"})
    return str(binary)


def test_the_github_workflow_passes_actionlint_and_a_broken_one_does_not(tmp_path):
    linter = actionlint()
    result = subprocess.run([linter, str(ROOT / ".github/workflows/preview.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = (ROOT / ".github/workflows/preview.yml").read_text().replace("runs-on:", "runs_on:", 1)
    (tmp_path / "preview.yml").write_text(broken)
    result = subprocess.run([linter, str(tmp_path / "preview.yml")], capture_output=True, text=True)
    assert result.returncode != 0 and "runs_on" in result.stdout
