"""Previews in pull requests: the comment renderer, which stacks a change touches, the Gitea
poster and the two pipelines that run them.

The digest fixtures follow the `pulumi preview --json` format of pulumi/pulumi (pkg/display
PreviewDigest, apitype.PolicyEvent) but were written by hand: this machine cannot run the
engine (issue 2). Replace them with recorded output once it can."""
import json
from pathlib import Path

import pytest
import yaml

from previews.comment import changes, marker, parse_urn, render
from previews.gitea import api_base, upsert_comment
from previews.touched import touched_stacks

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def events():
    return [json.loads(line) for line in (FIXTURES / "events-small.jsonl").read_text().splitlines()]


def test_urns_give_type_and_name():
    urn = "urn:pulumi:small::dockyard::dockyard:index:Cluster$dockyard:role:SwarmWorker$command:remote:Command::w5-x"
    assert parse_urn(urn) == ("command:remote:Command", "w5-x")


def test_the_comment_counts_each_logical_change_once():
    found = changes(load("preview-small.json"))
    assert sorted(c.op for c in found) == ["create", "delete", "delete", "replace", "update"]
    text = render("small", load("preview-small.json"), events())
    assert text.startswith(marker("small") + "\n### `pulumi preview` of stack `small`")
    assert "**1 to create, 1 to update, 1 to replace, 2 to delete**, 52 unchanged" in text
    assert "| `+-` replace | `cicd-gitea` | `docker:index/container:Container` | `image` |" in text
    assert "| `~` update | `do-worker-firewall` | `digitalocean:index/firewall:Firewall` | `dropletIds` |" in text
    assert text.count("cicd-gitea") == 1, "the replacement's halves are not listed again"
    assert "replaces or deletes resources" in text
    assert "dockyard-small" not in text.split("####")[0], "the stack itself is no change"


def test_the_comment_lists_policy_violations_mandatory_first():
    text = render("small", load("preview-small.json"), events())
    assert "#### Policy violations: 1 mandatory, 1 advisory" in text
    mandatory = text.index("**mandatory** `dockyard/droplet-size-allowed` on `do-w4`: Use an allowed size")
    advisory = text.index("**advisory** `dockyard/single-manager` on `the stack`")
    assert mandatory < advisory
    assert "\nSee dockyard:sizes" not in text, "messages are kept on one line"


def test_a_failed_preview_shows_its_error_and_no_changes():
    text = render("small", load("preview-failed.json"))
    assert "**The preview failed**" in text
    assert "- error: Program failed with an unhandled exception: invalid stack configuration:" in text
    assert "|---|" not in text


def test_no_changes():
    digest = {"steps": [], "changeSummary": {"same": 40}}
    assert "**No changes** (40 resources unchanged)" in render("default", digest)


def test_long_previews_are_cut_with_a_count():
    steps = [{"op": "create", "urn": f"urn:pulumi:s::dockyard::docker:index/container:Container::c{i}"}
             for i in range(75)]
    text = render("medium", {"steps": steps})
    assert "… and 15 more" in text and text.count("| `+` create |") == 60


def test_the_cli_writes_the_comment(tmp_path, capsys):
    from previews.comment import main

    assert main(["--stack", "small", str(FIXTURES / "preview-small.json"), "--events",
                 str(FIXTURES / "events-small.jsonl")]) == 0
    assert "Policy violations" in capsys.readouterr().out


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
    for name, value in workflow["jobs"]["preview"]["env"].items():
        if name != "PULUMI_SKIP_UPDATE_CHECK":
            assert value == "${{ secrets.%s }}" % name, f"{name} comes from a secret"


def test_the_drone_pipeline_runs_the_same_previews_on_pull_requests():
    pipeline = yaml.safe_load((ROOT / ".drone.yml").read_text())
    assert pipeline["trigger"]["event"] == ["pull_request"]
    (step,) = pipeline["steps"]
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "DIGITALOCEAN_TOKEN", "GITEA_TOKEN"):
        assert "from_secret" in step["environment"][name], f"{name} comes from a Drone secret"
    assert step["commands"][-1] == "bash previews/run.sh"
    assert "previews.gitea" in (ROOT / "previews/run.sh").read_text()


def test_touched_prints_a_matrix_or_plain_lines(monkeypatch, capsys):
    import io

    from previews.touched import main

    for argv, expected in (([], '["small"]\n'), (["--plain"], "small\n")):
        monkeypatch.setattr("sys.stdin", io.StringIO("stacks/Pulumi.small.yaml\nREADME.md\n"))
        assert main(argv) == 0
        assert capsys.readouterr().out == expected
