"""The local cloud on mocks: VMs made and removed by `python3 -m localcloud` through local
commands, in the right order, with the stack's generated key kept secret."""
import json

import pulumi
import pulumi.runtime.sync_await
import pytest

from tests.harness import docker_archive, TEST_KEY, run_program

LOCAL = "command:local:Command"


@pytest.fixture(scope="module")
def run():
    return run_program(stack="local", cloud="local", tier="default", workers="1")


def vm_commands(run):
    return [c for c in run.of_type(LOCAL) if "localcloud create" in c.inputs["create"]]


def test_three_vms_with_create_and_delete(run):
    vms = vm_commands(run)
    assert sorted(c.name for c in vms) == ["local-a", "local-b", "local-w1"]
    for vm in vms:
        assert "--net local --name local-" in vm.inputs["create"]
        assert vm.inputs["delete"].startswith("python3 -m localcloud delete --net local --name local-")


def test_addresses_are_static_in_the_private_range(run):
    creates = {c.name: c.inputs["create"] for c in vm_commands(run)}
    assert "--address 10.231.0.11/24" in creates["local-a"]
    assert "--address 10.231.0.12/24" in creates["local-b"]
    assert "--address 10.231.0.13/24" in creates["local-w1"]
    assert run.outputs["master_address"] == "10.231.0.11"
    assert run.outputs["swarm_manager_endpoint"] == "10.231.0.12:2377"


def test_stateful_hosts_get_a_data_disk(run):
    creates = {c.name: c.inputs["create"] for c in vm_commands(run)}
    assert "--data-gb 20" in creates["local-a"], "A keeps CI data"
    assert "--data-gb 20" in creates["local-b"], "B keeps NFS data"
    assert "--data-gb 0" in creates["local-w1"]
    (engine_b,) = [c for c in run.commands("docker-host.sh") if c.name == "b-docker"]
    assert "DATA_DEVICE=/dev/vdb" in engine_b.inputs["create"]
    assert "DATA_MOUNT=/srv/nfs" in engine_b.inputs["create"]


def test_vms_wait_for_network_and_image_and_the_network_goes_last(run):
    network = run.named("local-network")
    image = run.named("local-image")
    assert network.inputs["delete"] == "python3 -m localcloud network-down --net local"
    for vm in vm_commands(run):
        assert run.depends_on(vm, network) and run.depends_on(vm, image)


def test_bootstrap_waits_for_its_vm(run):
    vms = {c.name.removeprefix("local-"): c for c in vm_commands(run)}
    for engine in run.commands("docker-host.sh"):
        host = engine.name.removesuffix("-docker")
        assert run.depends_on(engine, vms[host])


def test_hosts_are_reached_directly_with_the_generated_key_kept_secret(run):
    for command in run.of_type("command:remote:Command"):
        connection = command.inputs["connection"]
        assert "proxy" not in connection
        assert connection["privateKey"] == TEST_KEY
        assert "connection" in command.secret_inputs
    for command in run.of_type(LOCAL):
        if command.name == "local-ssh-key-file":
            # the one copy on disk, for the docker provider's ssh: stdin, secret, mode 0600
            assert command.inputs["stdin"] == TEST_KEY and "stdin" in command.secret_inputs
            assert "umask 077" in command.inputs["create"] and command.inputs["delete"].startswith("rm -f ")
        else:
            assert "PRIVATE KEY" not in json.dumps(command.inputs)


def test_the_docker_provider_uses_the_key_file_after_it_is_written(run):
    (provider,) = run.of_type("pulumi:providers:docker")
    key_file = run.named("local-ssh-key-file")
    path = key_file.inputs["delete"].removeprefix("rm -f ")
    assert f"IdentityFile={path}" in provider.inputs["sshOpts"]
    assert run.depends_on(provider, key_file)
    assert provider.inputs["host"] == "ssh://root@10.231.0.11"


def test_local_stack_is_disposable(run):
    (cloud,) = run.of_type("dockyard:local:Cloud")
    assert cloud.inputs["disposable"] is True


def test_the_generated_key_is_exported_as_a_secret_only_on_local(run):
    key = run.cluster.platform.ssh_private_key
    assert key is not None
    assert pulumi.runtime.sync_await._sync_await(key.is_secret())
    do = run_program(stack="do", tier="minimal", workers="0")
    assert do.cluster.platform.ssh_private_key is None, "on DigitalOcean the key is the user's"


def test_every_connection_checks_the_host_key_its_vm_reported(run):
    from tests.harness import TEST_HOST_KEY_PREFIX

    for command in run.of_type("command:remote:Command"):
        host = command.inputs["connection"]["host"]
        vm = {"10.231.0.11": "local-a", "10.231.0.12": "local-b", "10.231.0.13": "local-w1"}[host]
        # the comment after the key is dropped: pulumi-command compares type and key
        assert command.inputs["connection"]["hostKey"] == f"{TEST_HOST_KEY_PREFIX}{vm}"


def test_every_vm_has_one_size_so_that_they_share_one_warm_template(run):
    sizes = {c.inputs["create"].split("--memory ")[1].split()[0] for c in vm_commands(run)}
    assert len(sizes) == 1


def test_preloaded_archives_are_baked_into_the_vms_template(tmp_path):
    archive = tmp_path / "web 1.tar"
    docker_archive(archive)
    baked = run_program(stack="local", cloud="local", tier="default", workers="1", preloadImages=[str(archive)])
    for vm in vm_commands(baked):
        assert f"--bake '{archive}'" in vm.inputs["create"]


def test_the_system_ssh_checks_the_keys_the_vms_reported(run):
    from tests.harness import TEST_HOST_KEY_PREFIX

    known_hosts = run.named("local-known-hosts")
    path = known_hosts.inputs["delete"].removeprefix("rm -f ")
    assert known_hosts.inputs["stdin"] == "".join(
        f"10.231.0.{11 + i} {TEST_HOST_KEY_PREFIX}local-{vm}\n" for i, vm in enumerate(["a", "b", "w1"]))
    (provider,) = run.of_type("pulumi:providers:docker")
    options = provider.inputs["sshOpts"]
    assert "StrictHostKeyChecking=yes" in options and f"UserKnownHostsFile={path}" in options
    assert run.depends_on(provider, known_hosts)
    for membership in [c for c in run.of_type(LOCAL) if c.name.endswith("-membership")]:
        config = membership.inputs["environment"]["SSH_CONFIG"]
        assert "StrictHostKeyChecking yes" in config and f"UserKnownHostsFile {path}" in config
        assert "StrictHostKeyChecking no" not in config
        assert run.depends_on(membership, known_hosts)
