"""Real `pulumi preview` of every DigitalOcean tier, with the policy pack, in the engine that
tools/setup.sh installs: what a pull request's pipeline runs. A dummy token, and the API
pointed at a closed local port, so any call to DigitalOcean during a preview fails it.

The counts are table 5.1 (DESIGN.md) with each stack file's workers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.topology import build_topology
from previews.comment import read_events, render
from tests.engine import ROOT, Engine

sys.path.insert(0, str(ROOT / "policies"))
from dockyard_policies import POLICIES  # noqa: E402

pytestmark = pytest.mark.engine

DROPLET = "digitalocean:index/droplet:Droplet"
VOLUME = "digitalocean:index/volume:Volume"
FIREWALL = "digitalocean:index/firewall:Firewall"
# table 5.1: hosts besides the workers; data volumes (NFS, and CI where Gitea/Drone run);
# one firewall per role present (master, cicd, nfs, manager, worker)
TABLE_5_1 = {"minimal": (1, 1, 4), "default": (2, 2, 5), "small": (5, 2, 5), "medium": (11, 3, 5)}
ADMIN_CIDR = "198.51.100.7/32"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's value of an output not known yet
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # the engine's marker of a secret value


def workers_of(stack: str) -> int:
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return int(config["dockyard:workers"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    tmp = tmp_path_factory.mktemp("previews")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "preview", "-f", str(tmp / "key")],
                   check=True)
    engine = Engine.in_tmp(tmp)
    for stack in TABLE_5_1:
        engine.init(stack, {
            "digitalocean:apiEndpoint": "http://127.0.0.1:9",
            "dockyard:sshPublicKey": (tmp / "key.pub").read_text().strip(),
            "dockyard:sshPrivateKeyPath": str(tmp / "key"),
            "dockyard:adminCidrs": [ADMIN_CIDR],
        }, {"digitalocean:token": "dummy-token-no-api-call-is-made"})
    return engine


@pytest.mark.parametrize("stack", list(TABLE_5_1))
def test_every_tier_previews_with_its_hosts_and_passes_the_policy_pack(engine, stack):
    preview = engine.preview(stack, "--policy-pack", "policies")
    hosts, volumes, firewalls = TABLE_5_1[stack]
    assert preview.count(DROPLET) == hosts + workers_of(stack)
    assert preview.count(VOLUME) == volumes
    assert preview.count(FIREWALL) == firewalls
    assert preview.violations == [], "no policy violation, advisory ones included"
    # every policy ran on what it reads (a policy that met an unknown value would be skipped
    # with a note, and one that found no data would pass without looking)
    assert preview.policies_passed == {policy.name for policy in POLICIES}
    notes = [d["message"] for d in preview.of_kind("diagnosticEvent") if "can't run policy" in d["message"]]
    assert notes == []
    # each droplet is made with the stack's host key (issue 14): its user data holds the
    # private key, so the preview shows a secret, never the text
    for step in preview.steps("create"):
        if step["type"] == DROPLET:
            data = step["new"]["inputs"]["userData"]
            assert data == UNKNOWN or (isinstance(data, dict) and SECRET_SIG in data and "plaintext" not in data), data
    assert "OPENSSH PRIVATE KEY" not in preview.run.stdout
    master_rules = next(s for s in preview.steps("create") if s["urn"].endswith("::do-master-firewall"))
    ssh = [r for r in master_rules["new"]["inputs"]["inboundRules"] if r.get("portRange") == "22"]
    assert ssh[0]["sourceAddresses"] == [ADMIN_CIDR]
    print(f"\n[engine] preview of {stack}: {preview.run.seconds:.1f} s")


def test_the_platform_services_preview_on_the_swarm_with_their_secrets_hidden(engine):
    """traefik, Portainer, monitoring and logs as a pull request sees them: the real engine plans the services on
    the first manager's docker without reaching it (no host exists), passwords shown as secrets."""
    # every service, the logs too (DigitalOcean's default leaves them out)
    engine.set("small", "dockyard:platformServices", ["ingress", "panel", "monitoring", "dashboards", "logs"])
    try:
        preview = engine.preview("small")
    finally:
        engine.run("config", "rm", "--stack", "small", "dockyard:platformServices")
    services = {s["new"]["inputs"]["name"]: s["new"]["inputs"] for s in preview.steps("create")
                if s["type"] == "docker:index/service:Service"}
    assert set(services) == {"traefik", "portainer-agent", "portainer", "node-exporter", "cadvisor", "prometheus",
                             "alertmanager", "grafana", "loki", "promtail"}
    traefik = services["traefik"]
    assert "global" in traefik["mode"] and traefik["taskSpec"]["placement"]["constraints"] == ["node.role==manager"]
    assert {p["publishMode"] for p in traefik["endpointSpec"]["ports"]} == {"host"}
    assert "global" in services["portainer-agent"]["mode"]
    server = services["portainer"]
    assert server["mode"]["replicated"]["replicas"] == 1
    assert "--admin-password-file" in server["taskSpec"]["containerSpec"]["args"]
    secrets = [s for s in preview.steps("create") if s["type"] == "docker:index/secret:Secret"]
    # the ingress's 3 files, Portainer's password, Prometheus' config and rules, Alertmanager's,
    # Grafana's password, 3 provisioning files (Loki's source too) and 3 dashboards, Loki's and
    # promtail's configs
    assert len(secrets) == 3 + 1 + 3 + 1 + 3 + 3 + 2
    # unknown to a preview where it comes from the passwords and keys the update makes, else a
    # secret value (a constant file, such as the alert rules): never the content in clear
    for step in secrets:
        data = step["new"]["inputs"]["data"]
        assert data == UNKNOWN or (isinstance(data, dict) and SECRET_SIG in data and "plaintext" not in data), data
    manager_rules = next(s for s in preview.steps("create") if s["urn"].endswith("::do-manager-firewall"))
    public = {r["portRange"] for r in manager_rules["new"]["inputs"]["inboundRules"]
              if "0.0.0.0/0" in r.get("sourceAddresses", [])}
    assert public == {"80", "443"}


def test_backups_to_spaces_preview_on_the_hosts_with_data_and_their_keys_stay_secret(engine):
    """A stack that backs up and restores, as a pull request previews it: a backup command on
    each host with a volume, the password and the S3 secret key never in clear."""
    password, secret_key = "preview-backup-password-4f1c", "preview-spaces-secret-9d2e"
    settings = {"dockyard:backupRepository": "s3:https://fra1.digitaloceanspaces.com/dockyard-backups/small",
                "dockyard:backupAccessKeyId": "DO00PREVIEWKEY", "dockyard:restoreFrom": "latest"}
    for key, value in settings.items():
        engine.set("small", key, value)
    for key, value in (("dockyard:backupPassword", password), ("dockyard:backupSecretAccessKey", secret_key)):
        engine.run("config", "set", "--stack", "small", "--secret", key, stdin=value)
    try:
        preview = engine.preview("small")
    finally:
        for key in [*settings, "dockyard:backupPassword", "dockyard:backupSecretAccessKey"]:
            engine.run("config", "rm", "--stack", "small", key)
    backups = {s["urn"].rsplit("::", 1)[1]: s["new"]["inputs"] for s in preview.steps("create")
               if s["urn"].endswith("-backup-restic")}
    topology = build_topology("small", workers_of("small"))
    # the hosts with data, and the last manager for the swarm's state
    expected = sorted({f"{h.name}-backup-restic" for h in topology.hosts if h.volume}
                      | {f"{topology.managers[-1].name}-backup-restic"})
    assert sorted(backups) == expected
    for inputs in backups.values():
        assert "RESTORE=latest" in inputs["create"] and "AWS_ACCESS_KEY_ID=DO00PREVIEWKEY" in inputs["create"]
        assert SECRET_SIG in inputs["stdin"], "the script's stdin carries the password: a secret"
    printed = preview.run.stdout + preview.run.stderr
    assert password not in printed and secret_key not in printed


def test_a_bad_config_value_fails_the_preview_and_names_the_key(engine):
    engine.set("default", "dockyard:workers", "-2")
    try:
        preview = engine.preview("default", check=False)
    finally:
        engine.set("default", "dockyard:workers", workers_of("default"))
    assert preview.run.returncode != 0
    message = "\n".join(preview.errors)
    assert "dockyard:workers" in message
    assert preview.steps("create") == [s for s in preview.steps("create") if s["type"] == "pulumi:pulumi:Stack"]


def test_a_change_that_breaks_a_policy_is_refused_and_the_comment_shows_why(engine, tmp_path):
    # what a careless pull request could do: the swarm's ports open to the world, and the
    # NFS and CI volumes no longer kept on destroy
    firewall = engine.workdir / "components/hosts/firewall.py"
    cloud = engine.workdir / "components/hosts/digitalocean.py"
    originals = {path: path.read_text() for path in (firewall, cloud)}
    safe = "rules += [Rule(proto, str(port), (private_cidr,)) for proto, port in swarm]"
    kept = "self._retain_volumes = not cfg.disposable"
    assert safe in originals[firewall] and kept in originals[cloud]
    firewall.write_text(originals[firewall].replace(safe, safe.replace("(private_cidr,)", "ANYWHERE")))
    cloud.write_text(originals[cloud].replace(kept, "self._retain_volumes = False"))
    try:
        preview = engine.preview("small", "--policy-pack", "policies", check=False)
    finally:
        for path, text in originals.items():
            path.write_text(text)
    assert preview.run.returncode != 0
    refused = {(v["policyName"], v["enforcementLevel"]) for v in preview.violations}
    assert refused == {("no-control-ports-to-internet", "mandatory"), ("stateful-volumes-kept", "mandatory")}
    assert any("Close port 2377/tcp (swarm management) to 0.0.0.0/0" in v["message"] for v in preview.violations)
    comment = render("small", preview.events)
    # 4 swarm ports on the manager and the worker firewall each, 2 volumes
    assert len(preview.violations) == 10
    assert "#### Policy violations: 10 mandatory, 0 advisory" in comment
    volume_lines = [line for line in comment.splitlines() if "`dockyard/stateful-volumes-kept` on `the stack`" in line]
    assert len(volume_lines) == 2 and "Keep volume dockyard-small-b-nfs" in "".join(volume_lines)


def test_the_custom_droplet_image_previews_a_builder_and_a_snapshot_that_outlives_it(engine):
    builder = ["--cwd", "images/digitalocean"]
    engine.run(*builder, "stack", "init", "image")
    engine.run(*builder, "config", "set", "--stack", "image", "digitalocean:apiEndpoint", "http://127.0.0.1:9")
    engine.run(*builder, "config", "set", "--stack", "image", "--secret", "digitalocean:token",
               stdin="dummy-token-no-api-call-is-made")
    run = engine.run(*builder, "preview", "--stack", "image", "--json", check=False,
                     env={"PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "true"})
    steps = [e["resourcePreEvent"]["metadata"] for e in read_events(run.stdout) if "resourcePreEvent" in e]
    assert run.returncode == 0, run.stderr[-3000:]
    created = {s["type"]: s for s in steps if s["op"] == "create"}
    for kind in ("tls:index/privateKey:PrivateKey", "digitalocean:index/sshKey:SshKey",
                 "digitalocean:index/droplet:Droplet", "digitalocean:index/dropletSnapshot:DropletSnapshot"):
        assert kind in created, f"{kind} is not in the preview"
    scripts = [s["new"]["inputs"]["triggers"][0] for s in steps if s["type"] == "command:remote:Command"]
    assert [t.split("@")[0] for t in scripts] == ["docker-host.sh", "image-bake.sh"]
    snapshot = created["digitalocean:index/dropletSnapshot:DropletSnapshot"]["new"]
    assert snapshot["retainOnDelete"] is True, "pulumi destroy removes the builder, never the image"
    assert snapshot["inputs"]["name"].startswith("dockyard-image-")
    droplet = created["digitalocean:index/droplet:Droplet"]["new"]["inputs"]
    assert droplet["image"] == "ubuntu-24-04-x64"
    assert "dockyard image recipe" in droplet["userData"], "a changed recipe replaces the builder"
    (power_off,) = [s for s in steps if s["urn"].endswith("::builder-power-off")]
    assert "droplet-power-off.sh" in power_off["new"]["inputs"]["create"]
    assert "dummy-token" not in json.dumps(power_off), "the token is a secret in the plan too"


def test_a_stack_made_with_its_overlays_in_clear_is_refused_until_it_says_so(engine, tmp_path):
    """Issue 14: a stack made before the overlays' traffic was encrypted exported a manager
    count and no swarm_data_path. Its preview stops with what to do; it goes through once the
    stack keeps its overlays in clear (dockyard:encryptDataPath false)."""
    stack = "madeinclear"
    key = engine.workdir.parent / "key"
    engine.init(stack, {
        "digitalocean:apiEndpoint": "http://127.0.0.1:9", "dockyard:cloud": "digitalocean",
        "dockyard:tier": "minimal", "dockyard:workers": "1", "dockyard:adminCidrs": [ADMIN_CIDR],
        "dockyard:sshPublicKey": (engine.workdir.parent / "key.pub").read_text().strip(),
        "dockyard:sshPrivateKeyPath": str(key),
    }, {"digitalocean:token": "dummy-token-no-api-call-is-made"})
    # the state such a stack has: its last outputs (here, nothing else)
    state = json.loads(engine.export(stack))
    state["deployment"]["resources"] = [{
        "urn": f"urn:pulumi:{stack}::dockyard::pulumi:pulumi:Stack::dockyard-{stack}",
        "custom": False, "type": "pulumi:pulumi:Stack", "outputs": {"manager_count": 1, "tier": "minimal"}}]
    (tmp_path / "state.json").write_text(json.dumps(state))
    engine.run("stack", "import", "--stack", stack, "--file", str(tmp_path / "state.json"))

    refused = engine.preview(stack, check=False)
    assert refused.run.returncode != 0
    message = "\n".join(refused.errors)
    assert "dockyard:encryptDataPath: this stack's swarm carries its overlay traffic on the private network, " \
           "in clear" in message and "dockyard:encryptDataPath false" in message
    # what the user is shown: the message alone (a debug event may carry the SDK's own trace,
    # depending on which output the engine serialises first)
    shown = [d["message"] for d in refused.of_kind("diagnosticEvent") if d.get("severity") != "debug"]
    assert shown and not [m for m in shown if "Traceback" in m], shown

    engine.set(stack, "dockyard:encryptDataPath", "false")
    kept = engine.preview(stack)
    assert kept.count(DROPLET) == 2
    worker_rules = next(s for s in kept.steps("create") if s["urn"].endswith("::do-worker-firewall"))
    assert {r.get("portRange") for r in worker_rules["new"]["inputs"]["inboundRules"] if r["protocol"] == "udp"} \
        == {"7946", "4789"}, "its VXLAN stays in clear on the VPC, as it was made"
