"""The whole program on mocks, per tier: hosts, firewalls, ordering and secrets."""
import ipaddress
import json
import runpy
import shlex
from pathlib import Path

import pulumi
import pytest
import yaml

from components.ports import CONTROL_PORTS
from components.shell import SCRIPTS_DIR, script_digest, script_text
from components.topology import build_topology
from tests.harness import (docker_archive, MANAGER_TOKEN, TEST_KEY, WORKER_TOKEN, Mocks, RecordingMonitor,
                           data_path_public_key, run_program)

ROOT = Path(__file__).resolve().parent.parent
TIERS = {"minimal": 1, "default": 2, "small": 5, "medium": 11}
COMMAND = "command:remote:Command"
LOCAL_COMMAND = "command:local:Command"
DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"


@pytest.fixture(scope="module", params=list(TIERS))
def tier_run(request):
    return request.param, run_program(stack=f"t-{request.param}", tier=request.param, workers="2")


def test_one_droplet_per_host_in_the_vpc_with_monitoring_and_tags(tier_run):
    tier, run = tier_run
    droplets = run.of_type(DROPLET)
    assert len(droplets) == TIERS[tier] + 2
    vpc = run.of_type("digitalocean:index/vpc:Vpc")
    assert len(vpc) == 1
    topo = build_topology(tier, 2)
    for droplet in droplets:
        host = topo.host(droplet.name.removeprefix("do-"))
        assert droplet.inputs["vpcUuid"] == f"{vpc[0].name}-id"
        assert droplet.inputs["monitoring"] is True
        tags = droplet.inputs["tags"]
        assert f"dockyard-stack:t-{tier}" in tags
        assert {f"dockyard-role:{r.value}" for r in host.roles} <= set(tags)
        # its host key only, and ignored once made: a change would replace the droplet
        assert droplet.inputs["userData"].startswith("#cloud-config\n") and "userData" in droplet.secret_inputs
        assert {"image", "sshKeys", "userData"} <= set(droplet.ignore_changes)


def test_each_droplet_gets_the_stacks_host_key_and_every_ssh_checks_it():
    """Issue 14: no connection to a droplet accepts a key unseen; each is made with a host
    key of the stack's (cloud-init installs it before sshd starts), and the bootstrap, the
    hop through the master, the docker provider and the memberships check it."""
    run = run_program(stack="keys", tier="small", workers="1")
    droplets = {d.name.removeprefix("do-"): d for d in run.of_type(DROPLET)}
    public = {}
    for name, droplet in droplets.items():
        key = run.named(f"do-{name}-host-key")
        assert key.inputs["algorithm"] == "ED25519"
        public[name] = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5do{name}host" + "key"
        cloud_config = yaml.safe_load(droplet.inputs["userData"])
        assert cloud_config == {"ssh_deletekeys": True, "ssh_genkeytypes": [],
                                "ssh_keys": {"ed25519_private": TEST_KEY, "ed25519_public": public[name]}}
    private = {name: pulumi.runtime.sync_await._sync_await(host.private_ip.future())
               for name, host in run.cluster.platform.hosts.items()}
    by_address = {ip: name for name, ip in private.items()}
    master_public = set()
    for command in run.of_type("command:remote:Command"):
        connection = command.inputs["connection"]
        # only the master is reached on its public address
        host = by_address.get(connection["host"], "a")
        if host == "a" and connection["host"] not in by_address:
            master_public.add(connection["host"])
        assert connection["hostKey"] == public[host], command.name
        if "proxy" in connection:
            assert connection["proxy"]["hostKey"] == public["a"], "the hop through the master checks it too"
    (master_ip,) = master_public
    known_hosts = run.named("do-known-hosts")
    path = known_hosts.inputs["delete"].removeprefix("rm -f ")
    lines = known_hosts.inputs["stdin"].splitlines()
    assert f"{private['a']},203.0.113.10,{master_ip} {public['a']}" in lines
    assert f"{private['w1']} {public['w1']}" in lines
    assert run.outputs["known_hosts"] == known_hosts.inputs["stdin"], "exported for ssh on other machines"
    assert len(lines) == len(droplets)
    for provider in run.of_type("pulumi:providers:docker"):
        options = provider.inputs["sshOpts"]
        assert "StrictHostKeyChecking=accept-new" in options and f"UserKnownHostsFile={path}" in options
        assert run.depends_on(provider, known_hosts)
    memberships = [c for c in run.of_type("command:local:Command") if c.name.endswith("-membership")]
    assert memberships
    for membership in memberships:
        config = membership.inputs["environment"]["SSH_CONFIG"]
        assert "StrictHostKeyChecking accept-new" in config and f"UserKnownHostsFile {path}" in config
        assert run.depends_on(membership, known_hosts)


def test_a_droplet_made_before_the_stack_made_host_keys_is_not_pinned_to_one_it_does_not_have():
    """An upgraded stack: its droplets keep their own keys (user data is ignored once made,
    and the provider holds none for them); only a droplet made now gets the stack's."""
    run = run_program(stack="upgraded", tier="default", workers="2", legacy_droplets=("do-a", "do-b", "do-w1"))
    new_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5dow2hostkey"
    connections = [c.inputs["connection"] for c in run.of_type("command:remote:Command")]
    keys = {c.get("hostKey") for c in connections}
    assert keys == {None, new_key}, "the old droplets' keys are accepted unseen, as before"
    assert all("hostKey" not in c.get("proxy", {}) for c in connections), "the master is an old droplet"
    lines = run.named("do-known-hosts").inputs["stdin"].splitlines()
    assert len(lines) == 1 and lines[0].endswith(new_key)


def test_the_host_key_user_data_is_cloud_config_cloud_init_reads():
    from components.hosts.digitalocean import host_key_user_data

    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    text = host_key_user_data(private, "ssh-ed25519 AAAAkey\n")
    assert text.splitlines()[0] == "#cloud-config"
    parsed = yaml.safe_load(text)
    assert parsed["ssh_keys"]["ed25519_private"] == private, "the key's lines, whole"
    assert parsed["ssh_keys"]["ed25519_public"] == "ssh-ed25519 AAAAkey"


def test_roles_are_placed_as_table_5_1(tier_run):
    tier, run = tier_run
    components = {r.type: [] for r in run.registrations}
    for r in run.registrations:
        components[r.type].append(r.name)
    expected_managers = {"minimal": ["a"], "default": ["b"], "small": ["c1", "c2", "c3"],
                         "medium": [f"d{i}" for i in range(1, 8)]}[tier]
    assert sorted(components["dockyard:role:SwarmManager"]) == sorted(f"{m}-manager" for m in expected_managers)
    assert sorted(components["dockyard:role:SwarmWorker"]) == ["w1-worker", "w2-worker"]
    expected_nfs = {"minimal": ["a"], "default": ["b"], "small": ["b"], "medium": ["c1", "c2"]}[tier]
    assert sorted(components["dockyard:role:NfsServer"]) == [f"{n}-nfs" for n in expected_nfs]
    assert components["dockyard:role:Master"] == ["a-master"]


def test_stateful_volumes_survive_destroy(tier_run):
    tier, run = tier_run
    volumes = run.of_type("digitalocean:index/volume:Volume")
    assert volumes, "NFS data needs a volume"
    assert all(v.retain_on_delete for v in volumes)
    attachments = run.of_type("digitalocean:index/volumeAttachment:VolumeAttachment")
    assert len(attachments) == len(volumes)


def test_a_recreated_stack_adopts_its_kept_volumes():
    kept = "506f78a4-e098-11e5-ad9f-000f53306ae1"
    run = run_program(stack="again", tier="small", workers="1", keptVolumes={"b": kept})
    volumes = {v.name: v for v in run.of_type("digitalocean:index/volume:Volume")}
    assert volumes["do-b-nfs"].import_id == kept, "the NFS data comes back"
    assert volumes["do-a-ci"].import_id == "", "volumes not listed are made new"
    # the adopted volume keeps the name and settings the stack gave it, so the import matches
    assert volumes["do-b-nfs"].inputs["name"] == "dockyard-again-b-nfs"


@pytest.mark.parametrize("kept,message", [
    ({"w1": "506f78a4-e098-11e5-ad9f-000f53306ae1"}, "host 'w1' has no data volume in tier small"),
    ({"b": "vol-1"}, "b: 'vol-1' is not a volume id"),
])
def test_kept_volumes_must_name_a_host_with_a_volume(kept, message):
    from components.config import ConfigError, parse_config
    from tests.harness import BASE_CONFIG

    with pytest.raises(ConfigError, match=message):
        parse_config("s", {**BASE_CONFIG, "tier": "small", "workers": "1", "keptVolumes": kept})


def test_disposable_stack_deletes_its_volumes():
    run = run_program(tier="default", workers="0", disposable="true")
    assert not any(v.retain_on_delete for v in run.of_type("digitalocean:index/volume:Volume"))


def rules(run, role):
    fw = run.named(f"do-{role}-firewall")
    return fw.inputs["inboundRules"]


def test_no_swarm_or_nfs_port_is_open_to_the_internet(tier_run):
    _, run = tier_run
    for fw in run.of_type(FIREWALL):
        for rule in fw.inputs["inboundRules"]:
            sources = set(rule.get("sourceAddresses", []))
            port = rule.get("portRange", "")
            if port.isdigit() and int(port) in CONTROL_PORTS:
                assert not sources & {"0.0.0.0/0", "::/0"}, f"{fw.name} opens {port} to the internet"
            if sources & {"0.0.0.0/0", "::/0"}:
                assert port in ("80", "443"), f"{fw.name} opens {port} to the internet"


def test_ssh_from_admins_to_master_only_and_from_master_to_the_rest(tier_run):
    _, run = tier_run
    master_ssh = [r for r in rules(run, "master") if r.get("portRange") == "22"]
    assert master_ssh == [{"protocol": "tcp", "portRange": "22", "sourceAddresses": ["203.0.113.0/24"]}]
    for fw in run.of_type(FIREWALL):
        if fw.name == "do-master-firewall":
            continue
        ssh = [r for r in fw.inputs["inboundRules"] if r.get("portRange") == "22"]
        assert len(ssh) == 1 and "sourceAddresses" not in ssh[0]
        assert len(ssh[0]["sourceDropletIds"]) == 1, "SSH only from the master droplet"


def test_swarm_and_nfs_ports_only_from_the_vpc(tier_run):
    _, run = tier_run
    # the overlays' VXLAN goes inside WireGuard (51820/udp): 4789 is not open at all
    swarm = {"2377", "7946", "51820", "4789"}
    for role, ports, opened in (("manager", swarm, swarm - {"4789"}), ("worker", swarm, swarm - {"4789"}),
                                ("nfs", {"2049"}, {"2049"})):
        found = {r["portRange"]: r["sourceAddresses"] for r in rules(run, role) if r.get("portRange") in ports}
        assert set(found) == opened
        assert all(sources == ["10.210.0.0/20"] for sources in found.values())
    udp = {r["portRange"] for r in rules(run, "worker") if r["protocol"] == "udp"}
    assert udp == {"7946", "51820"}


def test_every_droplet_is_behind_a_firewall(tier_run):
    _, run = tier_run
    covered = set()
    for fw in run.of_type(FIREWALL):
        assert fw.inputs["dropletIds"]
        covered.update(d.name for d in run.of_type(DROPLET) if d.urn in fw.dependencies)
    assert covered == {d.name for d in run.of_type(DROPLET)}


def test_project_groups_droplets_volumes_and_the_reserved_ip(tier_run):
    tier, run = tier_run
    (project,) = run.of_type("digitalocean:index/project:Project")
    resources = project.inputs["resources"]
    assert len([r for r in resources if r.startswith("do:droplet:")]) == TIERS[tier] + 2
    assert any(r.startswith("do:volume:") for r in resources)
    assert any(r.startswith("do:floatingip:") for r in resources)


def test_the_first_manager_sets_the_stacks_heartbeat():
    run = run_program(stack="hb", tier="default", workers="1", swarmHeartbeat="15s")
    (init,) = run.commands("swarm-init.sh")
    assert "HEARTBEAT=15s" in init.inputs["create"]


def test_joins_wait_for_the_swarm_init_and_its_tokens(tier_run):
    _, run = tier_run
    (init,) = run.commands("swarm-init.sh")
    (tokens,) = run.commands("swarm-tokens.sh")
    assert run.depends_on(tokens, init)
    joins = run.commands("swarm-join.sh")
    assert len(joins) == len(run.of_type("dockyard:role:SwarmManager")) - 1 + 2
    for join in joins:
        assert run.depends_on(join, init) and run.depends_on(join, tokens)
        engine = run.named(join.name.split("-")[0] + "-docker")
        assert run.depends_on(join, engine), "a host joins once its engine runs"


def test_mounts_wait_for_the_exports(tier_run):
    _, run = tier_run
    exports = {r.name.split("-")[0]: r for r in run.commands("nfs-server.sh")}
    replicas = run.commands("nfs-replica.sh")
    for mount in run.commands("nfs-mount.sh"):
        assert any(run.depends_on(mount, e) for e in exports.values()), f"{mount.name} does not wait for exports"
        if mount.name.endswith("-mount-ro") and replicas:
            assert run.depends_on(mount, replicas[0]), "ro mounts in medium wait for the replica"
    for replica in replicas:
        assert run.depends_on(replica, exports["c1"]), "the replica copies c1's export"


def test_labels_are_set_after_the_node_joins(tier_run):
    _, run = tier_run
    for labels in run.commands("swarm-labels.sh"):
        host = labels.name.split("-")[0]
        membership = [c for c in run.commands("swarm-join.sh") + run.commands("swarm-init.sh")
                      if c.name.startswith(f"{host}-")]
        assert len(membership) == 1 and run.depends_on(labels, membership[0])
        assert "dockyard.role=" in labels.inputs["create"]
        assert f"NODE_ID=node-{membership[0].name}" in labels.inputs["create"], "labels the node that joined"


def test_join_tokens_are_secret_end_to_end(tier_run):
    _, run = tier_run
    (tokens,) = run.commands("swarm-tokens.sh")
    assert set(tokens.additional_secret_outputs) >= {"stdout", "stderr"}
    assert tokens.inputs["logging"] == "none"
    for join in run.commands("swarm-join.sh"):
        assert "stdin" in join.secret_inputs, "the token travels in the secret stdin"
        token = MANAGER_TOKEN if "-manager-" in join.urn or "SwarmManager" in join.urn else WORKER_TOKEN
        assert token in join.inputs["stdin"]
    for command in run.of_type(COMMAND):
        text = json.dumps({k: v for k, v in command.inputs.items() if k not in command.secret_inputs})
        for secret in (WORKER_TOKEN, MANAGER_TOKEN, "test-private-key"):
            assert secret not in text, f"{command.name} holds a secret in clear"
        assert "connection" in command.secret_inputs, "the private key is a secret"
    assert WORKER_TOKEN not in json.dumps(run.outputs) and MANAGER_TOKEN not in json.dumps(run.outputs)


def test_scripts_run_through_bash_stdin_with_their_digest_as_trigger(tier_run):
    _, run = tier_run
    for command in run.of_type(COMMAND):
        assert command.inputs["create"].endswith("bash -s")
        (trigger,) = command.inputs["triggers"]
        script = trigger.split("@")[0]
        assert (SCRIPTS_DIR / script).is_file() and trigger == f"{script}@{script_digest(script)}"
        # what the host runs: the library and the script, behind nothing but the secret values
        stdin = command.inputs["stdin"]
        assert stdin.endswith(script_text(script)), command.name
        assert stdin == script_text(script) or "stdin" in command.secret_inputs, command.name


def test_private_hosts_are_reached_through_the_master(tier_run):
    _, run = tier_run
    (init,) = run.commands("swarm-init.sh")
    master = run.named("a-docker").inputs["connection"]["host"]
    assert master.startswith("198.51.100.")
    for command in run.of_type(COMMAND):
        connection = command.inputs["connection"]
        if command.name.endswith("-labels"):
            assert connection == init.inputs["connection"], "labels are set on the first manager"
        elif command.name.startswith(("a-", "cicd-a-")) or "proxy" not in connection:
            assert "proxy" not in connection and connection["host"] == master, command.name
        else:
            assert connection["proxy"]["host"].startswith("198.51.100."), command.name
            assert connection["host"].startswith("10.210.")


def test_outputs(tier_run):
    tier, run = tier_run
    out = run.outputs
    assert out["master_address"] == "203.0.113.10"
    assert len(out["worker_addresses"]) == 2
    assert out["swarm_manager_endpoint"].endswith(":2377")
    assert out["nfs_exports"]
    assert out["ssh_config"].count("ProxyJump dockyard-") == TIERS[tier] + 2 - 1


def test_small_exports_rw_to_managers_and_ro_to_the_vpc():
    run = run_program(tier="small", workers="1")
    (server,) = run.commands("nfs-server.sh")
    exports = server.inputs["create"]
    managers = run.outputs["manager_addresses"].values()
    for ip in managers:
        assert f"{ip}(rw," in exports
    assert "10.210.0.0/20(ro," in exports
    worker_ip = run.outputs["worker_addresses"]["w1"]
    assert worker_ip not in exports, "workers read through the VPC-wide read-only entry"


def test_config_errors_stop_the_program_before_any_resource(monkeypatch):
    monitor = RecordingMonitor(Mocks("10.0.0.0/8"))
    pulumi.runtime.set_mocks(monitor.mocks, project="dockyard", stack="bad", preview=True, monitor=monitor)
    pulumi.runtime.set_all_config({"dockyard:tier": "huge", "dockyard:workers": "-1"})
    try:
        with pytest.raises(pulumi.RunError) as info:
            runpy.run_path(str(ROOT / "__main__.py"))
    finally:
        pulumi.runtime.set_all_config({})
    assert "dockyard:tier" in str(info.value) and "dockyard:workers" in str(info.value)
    assert [r.type for r in monitor.registrations] == []


def test_image_archives_are_sent_from_here_to_every_host_after_its_engine_and_the_bastion(tmp_path):
    archive = tmp_path / "web-1.tar"
    docker_archive(archive)
    run = run_program(tier="small", workers="1", preloadImages=[str(archive)])
    script = script_text("images-send.sh")
    sends = [c for c in run.of_type(LOCAL_COMMAND) if c.name.endswith("-images-load")]
    assert len(sends) == 5 + 1
    setup = run.named("a-master-bastion")
    for send in sends:
        host = send.name.split("-")[0]
        assert send.inputs["create"] == f"bash -c {shlex.quote(script)} images-send.sh"
        env = send.inputs["environment"]
        assert env["HOST"] == f"dockyard-test-{host}" and env["ARCHIVES"] == str(archive)
        assert f"Host dockyard-test-{host}\n" in env["SSH_CONFIG"]
        assert run.depends_on(send, run.named(f"{host}-docker")) and run.depends_on(send, setup)
    # the archive now holds another image: every host's send runs again
    docker_archive(archive, "f" * 64)
    changed = run_program(tier="small", workers="1", preloadImages=[str(archive)])
    for send in sends:
        again = changed.named(send.name)
        assert again.inputs["triggers"] != send.inputs["triggers"], "a changed archive is sent again"


def test_missing_image_archive_is_a_config_error():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as info:
        run_program(tier="minimal", workers="0", preloadImages=["/nowhere/web.tar"])
    assert "dockyard:preloadImages" in str(info.value) and "no file at /nowhere/web.tar" in str(info.value)


def test_removed_nodes_are_drained_and_removed_through_any_manager_before_their_host_goes(tier_run):
    tier, run = tier_run
    memberships = [c for c in run.of_type(LOCAL_COMMAND) if c.name.endswith("-membership")]
    joins = run.commands("swarm-join.sh")
    assert len(memberships) == len(joins), "every joined node, manager or worker, has a membership"
    driver = script_text("swarm-membership.sh")
    removal = script_text("swarm-remove-node.sh")
    managers = {"minimal": ["a"], "default": ["b"], "small": ["c1", "c2", "c3"],
                "medium": [f"d{i}" for i in range(1, 8)]}[tier]
    for membership in memberships:
        host = membership.name.split("-")[0]
        (join,) = [j for j in joins if j.name.startswith(f"{host}-")]
        assert run.depends_on(membership, join), "removal runs before the join (and the host) go"
        assert membership.inputs["create"] == f"bash -c {shlex.quote(driver)} swarm-membership.sh check"
        assert membership.inputs["delete"] == f"bash -c {shlex.quote(driver)} swarm-membership.sh remove"
        assert membership.inputs["stdin"] == removal, "the removal goes to the manager on stdin"
        env = membership.inputs["environment"]
        assert env["NODE_ID"] == f"node-{join.name}"
        aliases = env["MANAGERS"].split()
        assert aliases == [f"dockyard-t-{tier}-{m}" for m in managers], "every manager, the first one first"
        config = env["SSH_CONFIG"]
        for alias in aliases:
            assert f"Host {alias}\n" in config
        assert "ConnectTimeout 10" in config and "BatchMode yes" in config, "a dead manager is skipped, bounded"
        if tier != "minimal":
            assert f"ProxyJump dockyard-t-{tier}-a" in config, "private managers are reached through the master"
        assert "PRIVATE KEY" not in json.dumps(membership.inputs)


def test_the_memberships_use_the_local_vms_key_file_once_it_is_written():
    run = run_program(stack="local", cloud="local", tier="default", workers="1")
    membership = run.named("w1-worker-membership")
    key_file = run.named("local-ssh-key-file")
    assert run.depends_on(membership, key_file), "ssh needs the key; destroy deletes the key file after"
    key_path = key_file.inputs["delete"].split()[-1]
    assert f"IdentityFile {key_path}\n" in membership.inputs["environment"]["SSH_CONFIG"]


def test_vms_are_deleted_after_their_node_leaves_the_swarm():
    run = run_program(stack="local", cloud="local", tier="default", workers="1")
    membership = run.named("w1-worker-membership")
    assert run.depends_on(membership, run.named("local-w1")), \
        "the VM outlives the membership, so destroy removes the node first"


def test_manager_removals_run_one_at_a_time_newest_first():
    run = run_program(tier="medium", workers="0")
    memberships = [run.named(f"d{i}-manager-membership") for i in range(2, 8)]
    for earlier, later in zip(memberships, memberships[1:]):
        assert run.depends_on(later, earlier), f"{later.name} must be deleted before {earlier.name}"


def test_the_replica_server_reads_the_write_export_as_root_and_no_one_else_does():
    # medium: c2 copies c1's rw export; with root_squash it would miss files of mode 0600
    run = run_program(tier="medium", workers="1")
    servers = {r.name.split("-")[0]: r.inputs["create"] for r in run.commands("nfs-server.sh")}
    c2 = run.outputs["nfs_exports"]["ro"]["source"].split(":")[0]
    assert f"{c2}(ro,sync,no_subtree_check,no_root_squash)" in servers["c1"]
    assert servers["c1"].count("no_root_squash") == servers["c1"].count("(rw,") + 1, \
        "root reads as root only on the writers and the replica"


def test_the_services_that_own_a_volume_wait_for_its_mount():
    run = run_program(tier="default", workers="1")
    owners = {r.name.removesuffix("-docker"): dict(kv.split("=", 1) for kv in shlex.split(r.inputs["create"])[:-2]
                                                  ).get("DATA_OWNERS")
              for r in run.commands("docker-host.sh")}
    assert owners == {"a": "docker", "b": "nfs-server", "w1": None}


def test_a_new_image_or_key_does_not_replace_a_droplet():
    run = run_program(tier="small", workers="1")
    for droplet in run.of_type("digitalocean:index/droplet:Droplet"):
        assert {"image", "sshKeys"} <= set(droplet.ignore_changes), droplet.name


def test_every_join_names_the_first_manager_of_its_swarm():
    run = run_program(tier="small", workers="2")
    first = run.named("c1-manager-swarm-init")
    joins = run.commands("swarm-join.sh")
    assert len(joins) == 2 + 2
    for join in joins:
        assert f"FIRST_MANAGER_ID=node-{first.name}" in join.inputs["create"], join.name


def test_the_program_refuses_to_remove_half_of_the_managers_in_one_update():
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="going from 5 to 1 managers"):
        run_program(tier="small", workers="0", managers="1", previous_managers=5)
    run = run_program(tier="small", workers="0", managers="3", previous_managers=5)
    assert run.outputs["manager_count"] == 3, "the next update compares with this count"


def test_the_key_file_is_read_as_a_secret(tmp_path):
    from pulumi.runtime.sync_await import _sync_await

    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nkey-from-a-file\n-----END OPENSSH PRIVATE KEY-----\n"
    (tmp_path / "id_ed25519").write_text(key)
    run = run_program(tier="minimal", workers="0", sshPrivateKey=None, sshPrivateKeyPath=str(tmp_path / "id_ed25519"))
    assert _sync_await(run.private_key.future()) == key
    assert _sync_await(run.private_key.is_secret()), "the key never travels in clear"
    assert run.named("a-docker").inputs["connection"]["privateKey"] == key


def test_every_cloud_the_configuration_accepts_has_hosts():
    from components.config import CLOUDS as NAMES
    from components.program import CLOUDS

    assert sorted(CLOUDS) == sorted(NAMES)


def test_every_host_gets_its_maintenance_after_its_engine_keeping_the_preloaded_images(tmp_path):
    archive = docker_archive(tmp_path / "web-1.tar", "c" * 64)
    run = run_program(tier="small", workers="1", preloadImages=[str(archive)], pruneSchedule="daily",
                      pruneAfter="72h")
    upkeep = run.commands("host-maintenance.sh")
    assert sorted(c.name for c in upkeep) == sorted(f"{h}-maintenance" for h in ("a", "b", "c1", "c2", "c3", "w1"))
    for command in upkeep:
        host = command.name.removesuffix("-maintenance")
        assert run.depends_on(command, run.named(f"{host}-docker"))
        create = command.inputs["create"]
        assert "PRUNE_SCHEDULE=daily" in create and "PRUNE_AFTER=72h" in create
        assert f"KEEP_IMAGES='sha256:{'c' * 64} " in create, "the preloaded image, first"
        assert "registry:2.8.3" in create, "and what CI/CD runs"


def test_an_autolocked_swarm_hands_its_unlock_key_to_the_operator_as_a_secret():
    """Issue 14: dockyard:swarmAutolock; the key that unlocks a restarted manager is a stack
    secret (README: "Security model"), read once the swarm exists and never logged."""
    from tests.harness import UNLOCK_KEY

    run = run_program(stack="locked", tier="small", workers="1", swarmAutolock="true")
    (init,) = run.commands("swarm-init.sh")
    assert "AUTOLOCK=true" in init.inputs["create"]
    (key,) = run.commands("swarm-unlock-key.sh")
    assert set(key.additional_secret_outputs) >= {"stdout", "stderr"} and key.inputs["logging"] == "none"
    assert run.depends_on(key, init)
    assert run.outputs["swarm_unlock_key"] == UNLOCK_KEY
    assert pulumi.runtime.sync_await._sync_await(run.deployment.cluster.managers[0].unlock_key.is_secret())
    plain = run_program(stack="plain", tier="small", workers="1")
    assert run.commands("swarm-unlock-key.sh") and not plain.commands("swarm-unlock-key.sh")
    assert "swarm_unlock_key" not in plain.outputs
    assert "AUTOLOCK=false" in plain.commands("swarm-init.sh")[0].inputs["create"]


def resolved(output):
    return pulumi.runtime.sync_await._sync_await(output.future())


def script_env(command) -> dict[str, str]:
    """The VAR=value assignments in front of `bash -s` in a command's create."""
    words = shlex.split(command.inputs["create"])
    return dict(w.split("=", 1) for w in words[:words.index("bash")])


def test_every_swarm_node_carries_its_overlay_traffic_inside_wireguard():
    """Issue 14: the overlays' traffic between nodes is encrypted. Every swarm node makes its
    key pair, gets every other node as a peer at its private address, and joins the swarm
    with its WireGuard address as its data path; the control traffic stays on the private one."""
    run = run_program(tier="small", workers="2")
    nodes = {"c1", "c2", "c3", "w1", "w2"}
    keys = {c.name.split("-")[-2]: c for c in run.commands("swarm-datapath.sh") if script_env(c)["ACTION"] == "key"}
    ups = {c.name.split("-")[-1]: c for c in run.commands("swarm-datapath.sh") if script_env(c)["ACTION"] == "up"}
    assert set(keys) == set(ups) == nodes, "the swarm nodes, and only they (not the master, the NFS or CI hosts)"

    address = {}
    for name in nodes:
        env = script_env(ups[name])
        assert env["PORT"] == "51820" and env["ADDRESS"].endswith("/16")
        address[name] = env["ADDRESS"].split("/")[0]
        assert keys[name].urn in ups[name].dependencies
        assert "stdout" not in keys[name].additional_secret_outputs, "only the public key leaves the host"
    # a node's WireGuard address is its private address's place in the VPC, in 100.90.0.0/16
    addresses = run.deployment.cluster.data_path.addresses
    for name in nodes:
        ip = ipaddress.ip_address(address[name])
        assert ip in ipaddress.ip_network("100.90.0.0/16") and str(ip).endswith(
            "." + ".".join(resolved(run.deployment.cluster.platform.hosts[name].private_ip).split(".")[2:]))
        assert resolved(addresses[name]) == address[name]
    assert len(set(address.values())) == len(nodes)

    for name in nodes:
        peers = sorted(line.split() for line in script_env(ups[name])["PEERS"].splitlines())
        expected = sorted([data_path_public_key(keys[o].name), resolved(run.deployment.cluster.platform.hosts[o].private_ip),
                           address[o]] for o in nodes - {name})
        assert peers == expected, name

    (init,) = run.commands("swarm-init.sh")
    assert script_env(init)["DATA_PATH_ADDR"] == address["c1"]
    assert script_env(init)["ADVERTISE_ADDR"] != address["c1"]
    assert ups["c1"].urn in init.dependencies, "the interface is up before Docker is told to use it"
    for join in run.commands("swarm-join.sh"):
        node = join.name.split("-")[0]
        assert script_env(join)["DATA_PATH_ADDR"] == address[node]
        assert ups[node].urn in join.dependencies
    assert run.outputs["swarm_data_path"] == "100.90.0.0/16"


def test_a_stack_may_keep_its_overlay_traffic_in_clear_on_the_private_network():
    run = run_program(tier="small", workers="1", encryptDataPath="false")
    assert run.commands("swarm-datapath.sh") == []
    for command in run.commands("swarm-init.sh") + run.commands("swarm-join.sh"):
        assert "DATA_PATH_ADDR" not in script_env(command), "its private address, as before"
    assert {r["portRange"] for r in rules(run, "worker") if r["protocol"] == "udp"} == {"7946", "4789"}
    assert run.outputs["swarm_data_path"] == "private network, in clear"


def test_a_live_swarm_cannot_move_its_overlay_traffic():
    """A stack made before the data path was encrypted (it exported no swarm_data_path) keeps
    its overlays in clear until it is recreated; the preview says so before any change."""
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="dockyard:encryptDataPath: this stack's swarm carries its overlay "
                                          "traffic on the private network, in clear.*encryptDataPath false"):
        run_program(tier="small", workers="1", previous_managers=3, previous_data_path=None)
    kept = run_program(tier="small", workers="1", previous_managers=3, previous_data_path=None, encryptDataPath="false")
    assert kept.outputs["swarm_data_path"] == "private network, in clear"
    with pytest.raises(ConfigError, match="dataPathCidr 100.90.0.0/16"):
        run_program(tier="small", workers="1", previous_managers=3, dataPathCidr="100.64.0.0/16")
    fresh = run_program(tier="small", workers="1", previous_managers=None, previous_data_path=None)
    assert fresh.outputs["swarm_data_path"] == "100.90.0.0/16", "a new stack is encrypted"


def test_a_machine_that_never_made_the_droplets_gets_their_keys_from_its_first_run(tmp_path):
    """Issue 14: the known_hosts file used to be written only by the command that ran where
    the droplets were made; another operator's machine accepted the keys it met. Every run
    now merges the stack's last exported keys into it, first thing (and only rewrites a file
    that differs): a line of the stack's replaces the file's for the same address, and the
    lines ssh's accept-new added for droplets made before the stack made host keys stay."""
    import base64
    import hashlib
    import hmac

    from components.hosts.digitalocean import known_hosts_path

    assert str(known_hosts_path("second")).startswith(str(Path.home())), "a real run writes under the user's home"
    # a new stack has no last output: the program writes nothing (the command does, once
    # the droplets exist)
    new = run_program(stack="second", tier="default", workers="1", state_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()
    exported = new.outputs["known_hosts"]
    stack_lines = exported.splitlines()
    assert len(stack_lines) == len(new.of_type(DROPLET))
    master_line = next(line for line in stack_lines if "203.0.113.10" in line)
    master_private = master_line.split()[0].split(",")[0]

    def hashed(address: str) -> str:
        """An address as ssh writes it with HashKnownHosts yes."""
        salt = bytes(range(20))
        digest = hmac.new(salt, address.encode(), hashlib.sha1).digest()
        return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"

    legacy = ["10.210.0.99 ssh-ed25519 AAAAlegacydroplet", f"{hashed('10.210.0.98')} ssh-ed25519 AAAAhashedlegacy"]
    file = tmp_path / "second" / "digitalocean" / "second" / "known_hosts"
    file.parent.mkdir(parents=True)
    file.write_text("\n".join([
        legacy[0],
        # stale: an address of the stack's under another key, alone or hashed
        f"{master_private} ssh-ed25519 AAAAsomeoneelse",
        f"{hashed('203.0.113.10')} ssh-ed25519 AAAAsomeoneelsehashed",
        legacy[1],
    ]) + "\n")

    def second_machine_run():
        return run_program(stack="second", tier="default", workers="1", state_dir=tmp_path / "second",
                           previous_managers=new.outputs["manager_count"], previous_known_hosts=exported)

    run = second_machine_run()
    written = file.read_text()
    assert written == exported + "".join(f"{line}\n" for line in legacy), "the stack's lines, then the others kept"
    assert "AAAAsomeoneelse" not in written
    assert [p.name for p in file.parent.iterdir()] == ["known_hosts"], "no temporary file left"

    before = file.stat().st_mtime_ns
    second_machine_run()
    assert file.stat().st_mtime_ns == before and file.read_text() == written, "an unchanged file is left alone"
    assert [p.name for p in file.parent.iterdir()] == ["known_hosts"]


def test_the_known_hosts_file_merges_the_stacks_lines_with_the_others(tmp_path):
    from components.hosts.digitalocean import sync_known_hosts

    file = tmp_path / "dir" / "known_hosts"
    lines = "10.0.0.2,203.0.113.10,198.51.100.1 ssh-ed25519 AAAAmaster\n10.0.0.3 ssh-ed25519 AAAAworker\n"
    assert sync_known_hosts(file, "") == str(file) and not file.exists(), "nothing to write"
    assert sync_known_hosts(file, lines) == str(file) and file.read_text() == lines
    # a line ssh added: the stack's address is covered by a line of the stack's
    file.write_text(lines + "198.51.100.1 ssh-ed25519 AAAAstale\n# a comment\n10.0.0.4 ssh-ed25519 AAAAold")
    sync_known_hosts(file, lines)
    assert file.read_text() == lines + "# a comment\n10.0.0.4 ssh-ed25519 AAAAold\n"
    # a replaced droplet: its new key replaces the line of its address
    sync_known_hosts(file, lines.replace("AAAAworker", "AAAAnewworker"))
    assert "AAAAworker" not in file.read_text() and "10.0.0.3 ssh-ed25519 AAAAnewworker\n" in file.read_text()
    assert sorted(p.name for p in file.parent.iterdir()) == ["known_hosts"]


class _NewWorkerMocks(Mocks):
    """A preview that adds worker w2 to an existing stack: what the provider does not know
    of its droplet and host key until they are made is left out, so it is unknown."""

    def new_resource(self, args):
        if args.typ == COMMAND and "create" not in args.inputs:
            # a run on the new host, whose command line is not known yet (nor its output)
            return f"{args.name}-id", dict(args.inputs)
        id_, outputs = super().new_resource(args)
        if args.name in ("do-w2", "do-w2-host-key"):
            for key in ("ipv4Address", "ipv4AddressPrivate", "userData", "dropletUrn",
                        "privateKeyOpenssh", "publicKeyOpenssh", "privateKeyPem"):
                outputs.pop(key, None)
        return id_, outputs


def test_a_preview_that_adds_a_droplet_leaves_the_others_ssh_options_known(tmp_path, monkeypatch):
    """The file is written from the stack's last output, known in a preview: adding a droplet
    does not make every docker provider's ssh options and every membership's ssh config
    unknown (a noisy pull-request preview), and an `up` does not hold them for new droplets."""
    import tests.harness as harness
    from pulumi.runtime.rpc import UNKNOWN

    before = run_program(stack="grows", tier="default", workers="1", state_dir=tmp_path / "made")
    monkeypatch.setattr(harness, "Mocks", _NewWorkerMocks)
    run = run_program(stack="grows", tier="default", workers="2", state_dir=tmp_path / "preview", preview=True,
                      previous_managers=before.outputs["manager_count"],
                      previous_known_hosts=before.outputs["known_hosts"])
    assert run.named("do-known-hosts").inputs["stdin"] == UNKNOWN, "the new droplet's key is not known yet"
    assert (tmp_path / "preview" / "digitalocean" / "grows" / "known_hosts").read_text() == \
        before.outputs["known_hosts"], "the preview wrote the last output's lines"
    providers = run.of_type("pulumi:providers:docker")
    assert providers and sorted(p.name for p in providers) == sorted(
        p.name for p in before.of_type("pulumi:providers:docker"))
    for provider in providers:
        assert provider.inputs["sshOpts"] != UNKNOWN, provider.name
        # a provider's inputs go to the engine as JSON text
        options = json.loads(provider.inputs["sshOpts"])
        assert UNKNOWN not in options and "StrictHostKeyChecking=accept-new" in options, provider.name
    memberships = [c for c in run.of_type(LOCAL_COMMAND) if c.name.endswith("-membership")]
    assert memberships
    for membership in memberships:
        config = membership.inputs["environment"]["SSH_CONFIG"]
        assert UNKNOWN not in config and "StrictHostKeyChecking accept-new" in config, membership.name


def test_live_restore_only_on_the_hosts_that_are_no_swarm_node():
    """Issue 14 (CIS Docker benchmark): Docker refuses live-restore in swarm mode, so only the
    master, CI/CD and NFS hosts that are no swarm node keep their containers through a
    restart of dockerd."""
    run = run_program(tier="small", workers="1")
    topology = build_topology("small", 1, 3, "/srv/nfs", "/mnt/nfs")
    swarm = {s.name for s in topology.managers + topology.workers}
    seen = {}
    for command in run.commands("docker-host.sh"):
        host = command.name.removesuffix("-docker")
        seen[host] = script_env(command)["LIVE_RESTORE"]
    assert seen == {h.name: "false" if h.name in swarm else "true" for h in topology.hosts}
    assert "true" in seen.values() and "false" in seen.values()
