"""Gitea, Drone and the registry on the CI/CD host, on mocks, per tier: where they run, how
they are wired, that the CA reaches every host and that no secret is in clear."""
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from components.gitea import parse_oauth_app
from components.registry import docker_config_json
from components.config import ConfigError, parse_config
from components.hosts.firewall import inbound_rules
from components.topology import Role, build_topology
from policies import dockyard_policies as policies
from tests.certs import make_authority
from tests.harness import (BASE_CONFIG, DRONE_DATABASE_SECRET, GENERATED_PREFIX, GITEA_SECRET_KEY, OAUTH_SECRET,
                           TEST_KEY, run_program, script_command)
from tests.test_policies import resource_args, violations

CONTAINER = "docker:index/container:Container"
PROVIDER = "pulumi:providers:docker"
COMMAND = "command:remote:Command"
CI_HOST = {"default": "a", "small": "a", "medium": "b"}
RESERVED_IP = "203.0.113.10"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=list(CI_HOST))
def tier_run(request):
    return request.param, run_program(stack=f"ci-{request.param}", tier=request.param, workers="2")


def envs(container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.inputs["envs"])



def test_the_trio_runs_on_the_tiers_ci_host_through_its_docker_provider(tier_run):
    tier, run = tier_run
    ci = CI_HOST[tier]
    provider = run.named(f"{ci}-docker-provider")
    engine = run.named(f"{ci}-docker")
    ci_address = engine.inputs["connection"]["host"]
    ssh_opts = provider.inputs["sshOpts"]
    # provider settings reach the engine JSON-encoded
    opts = " ".join(json.loads(ssh_opts) if isinstance(ssh_opts, str) else ssh_opts)
    if ci == "a":
        # the master: reached on its reserved address, no hop
        assert provider.inputs["host"] == f"ssh://root@{RESERVED_IP}"
        assert "ProxyCommand" not in opts
    else:
        # medium's CI host is private: reached through the master with the same key
        assert provider.inputs["host"] == f"ssh://root@{ci_address}"
        assert "ProxyCommand=ssh " in opts and f"root@{RESERVED_IP}" in opts
    assert run.depends_on(provider, engine), "the provider connects once the host's engine runs"
    # it does not retry a refused connection: master.sh's sshd reload must be over (a real
    # `pulumi up` of local failed there once, as the stand-in engine never showed)
    assert run.depends_on(provider, run.named("a-master-bastion")), "and once the master's sshd is reloaded"
    containers = {c.inputs["name"]: c for c in run.of_type(CONTAINER)}
    assert set(containers) == {"registry", "gitea", "drone", "drone-runner"}
    for container in containers.values():
        assert container.inputs["restart"] == "unless-stopped"
        assert container.inputs["healthcheck"]["tests"][0] == "CMD"
        assert container.inputs["image"].startswith("sha256:"), "pinned to the pulled image's ID"
        data = [v["hostPath"] for v in container.inputs.get("volumes", []) if v["hostPath"].startswith("/srv/ci/")]
        if container.inputs["name"] != "drone-runner":
            assert data, f"{container.inputs['name']} keeps its data on the CI volume"
    images = {i.inputs["name"] for i in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert images == {"registry:2.8.3", "gitea/gitea:1.22.6", "drone/drone:2.24.0", "drone/drone-runner-docker:1.8.3"}


def test_minimal_has_no_ci_host_and_no_trio():
    run = run_program(stack="ci-minimal", tier="minimal", workers="1")
    assert [p.name for p in run.of_type(PROVIDER)] == ["a-swarm-docker-provider"], "the swarm's, for its services"
    assert run.of_type(CONTAINER) == []
    assert "registry" not in run.outputs and "gitea_url" not in run.outputs


def test_drone_is_wired_to_gitea_with_the_oauth_app_and_a_shared_rpc_secret(tier_run):
    tier, run = tier_run
    containers = {c.inputs["name"]: c for c in run.of_type(CONTAINER)}
    drone, runner = containers["drone"], containers["drone-runner"]
    server = envs(drone)
    address = RESERVED_IP if CI_HOST[tier] == "a" else run.named(f"{CI_HOST[tier]}-docker").inputs["connection"]["host"]
    assert server["DRONE_GITEA_SERVER"] == f"https://{address}:3000"
    assert server["DRONE_GITEA_CLIENT_ID"] == "test-client-id"
    assert server["DRONE_GITEA_CLIENT_SECRET"] == OAUTH_SECRET
    assert server["DRONE_SERVER_HOST"] == f"{address}:8000"
    assert server["DRONE_RPC_SECRET"].startswith(GENERATED_PREFIX)
    assert envs(runner)["DRONE_RPC_SECRET"] == server["DRONE_RPC_SECRET"]
    assert envs(runner)["DRONE_RPC_HOST"] == "drone"
    assert envs(runner)["DRONE_DOCKER_CONFIG"] == "/etc/dockyard/docker-config.json"
    for container in (drone, runner):
        assert "envs" in container.secret_inputs and "envs" in container.additional_secret_outputs
    (setup,) = run.commands("gitea-setup.sh")
    assert set(setup.additional_secret_outputs) >= {"stdout", "stderr"} and setup.inputs["logging"] == "none"
    assert f"DRONE_URL=https://{address}:8000" in setup.inputs["create"]
    assert run.depends_on(drone, setup) and run.depends_on(setup, run.named("cicd-gitea"))
    assert server["DRONE_USER_CREATE"] == f"username:dockyard,admin:true,token:{run.outputs['drone_admin_token']}", \
        "the admin can script Drone with the stack's token"
    assert envs(runner)["DRONE_NETRC_CLONE_ONLY"] == "true", "the Gitea token reaches the clone step only"
    assert "DRONE_RUNNER_CLONE_IMAGE" not in envs(runner), "the runner's own clone image unless one is set"
    gitea = envs(containers["gitea"])
    assert gitea["GITEA__security__INSTALL_LOCK"] == "true"
    # the keys of the data come from the CI volume (ci-secrets.sh), not from the stack, so a
    # recreated stack that adopts the volume can still decrypt it
    assert gitea["GITEA__security__SECRET_KEY"] == GITEA_SECRET_KEY
    assert server["DRONE_DATABASE_SECRET"] == DRONE_DATABASE_SECRET
    (keys,) = run.commands("ci-secrets.sh")
    assert set(keys.additional_secret_outputs) >= {"stdout", "stderr"} and keys.inputs["logging"] == "none"
    assert "gitea-secret-key" not in {r.name.removeprefix("cicd-") for r in run.registrations}
    assert gitea["GITEA__service__DISABLE_REGISTRATION"] == "true"
    assert "envs" in containers["gitea"].secret_inputs


def test_gitea_and_drone_serve_https_only_with_a_certificate_of_the_stacks_ca(tier_run):
    """Issue 14: passwords, tokens and code travel to Gitea and Drone over TLS; their clients
    (Drone, the runner, the pipelines' steps, the setup script) check the stack's CA."""
    tier, run = tier_run
    containers = {c.inputs["name"]: c for c in run.of_type(CONTAINER)}
    gitea, drone, runner = (envs(containers[n]) for n in ("gitea", "drone", "drone-runner"))
    address = RESERVED_IP if CI_HOST[tier] == "a" else run.named(f"{CI_HOST[tier]}-docker").inputs["connection"]["host"]
    assert run.outputs["gitea_url"] == f"https://{address}:3000" and run.outputs["drone_url"] == f"https://{address}:8000"
    assert gitea["GITEA__server__PROTOCOL"] == "https" and gitea["GITEA__server__ROOT_URL"].startswith("https://")
    assert gitea["GITEA__server__CERT_FILE"] == "/etc/dockyard/tls/web.crt"
    assert (drone["DRONE_SERVER_PROTO"], drone["DRONE_TLS_CERT"]) == ("https", "/etc/dockyard/tls/web.crt")
    assert [p["internal"] for p in containers["drone"].inputs["ports"]] == [443], "8000 is Drone's HTTPS, no HTTP"
    assert runner["DRONE_RPC_PROTO"] == "https"
    for env in (gitea, drone, runner):
        assert env["SSL_CERT_FILE"] == "/etc/dockyard/tls/ca-bundle.crt", "Go clients trust the stack's CA"
    # the steps get a copy of the roots no step can change; the services' own stays out of them
    assert runner["DRONE_RUNNER_VOLUMES"] == "/srv/ci/tls/steps/ca-bundle.crt:/etc/ssl/certs/ca-certificates.crt"
    environ = dict(item.split(":") for item in runner["DRONE_RUNNER_ENVIRON"].split(","))
    assert environ["REQUESTS_CA_BUNDLE"] == environ["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    # the runner's envconfig refuses a map item that is not exactly KEY:VALUE (":ro" included:
    # `invalid map item`, seen with drone-runner-docker 1.8.3)
    for setting in ("DRONE_RUNNER_VOLUMES", "DRONE_RUNNER_ENVIRON"):
        assert all(len(item.split(":")) == 2 for item in runner[setting].split(","))
    for name in ("gitea", "drone"):
        mounts = {v["hostPath"]: v for v in containers[name].inputs["volumes"]}
        assert mounts["/srv/ci/tls"]["readOnly"] is True
    runner_mounts = {v["hostPath"]: v for v in containers["drone-runner"].inputs["volumes"]}
    assert "/srv/ci/tls" not in runner_mounts, "the runner does not see the key"
    assert runner_mounts["/srv/ci/tls/ca-bundle.crt"]["readOnly"] is True
    health = containers["gitea"].inputs["healthcheck"]["tests"]
    assert "https://localhost:3000/api/healthz" in health and "--cacert" in health
    # one certificate for both, for every name they are reached by
    csr = run.named("cicd-web-csr")
    private_ip = run.named("cicd-registry-csr").inputs["ipAddresses"][0]
    assert sorted(csr.inputs["ipAddresses"]) == sorted({address, private_ip, "127.0.0.1"})
    assert set(csr.inputs["dnsNames"]) == {"gitea", "drone", "localhost"}
    (files,) = run.commands("ci-tls.sh")
    assert "stdin" in files.secret_inputs and "BEGIN PRIVATE KEY" in files.inputs["stdin"]
    assert "BEGIN PRIVATE KEY" not in files.inputs["create"]
    (setup,) = run.commands("gitea-setup.sh")
    assert "CA_FILE=/srv/ci/tls/ca.crt" in setup.inputs["create"] and "GITEA_URL=https://localhost:3000" in setup.inputs["create"]
    assert drone["DRONE_COOKIE_SECRET"].startswith(GENERATED_PREFIX), "a restart logs nobody out"
    for name in ("gitea", "drone", "drone-runner"):
        container = containers[name]
        assert run.depends_on(container, files), f"{name} starts with its certificate in place"
        labels = {label["label"]: label["value"] for label in container.inputs["labels"]}
        assert len(labels["dockyard.certificate"]) == 16, "a renewed certificate restarts it"


def test_the_registry_serves_tls_with_htpasswd_and_passes_the_policy(tier_run):
    _, run = tier_run
    registry = next(c for c in run.of_type(CONTAINER) if c.inputs["name"] == "registry")
    env = envs(registry)
    assert env["REGISTRY_AUTH"] == "htpasswd" and env["REGISTRY_HTTP_TLS_CERTIFICATE"] == "/certs/registry.crt"
    assert violations(policies.registry_tls_and_auth, resource_args(CONTAINER, registry.inputs, name=registry.name)) == []
    stripped = {**registry.inputs, "envs": [e for e in registry.inputs["envs"] if "TLS" not in e]}
    assert violations(policies.registry_tls_and_auth, resource_args(CONTAINER, stripped, name=registry.name))
    (files,) = run.commands("ci-files.sh")
    assert run.depends_on(registry, files)
    stdin = files.inputs["stdin"]
    assert "stdin" in files.secret_inputs
    assert "REGISTRY_HTPASSWD='dockyard:$2a$10$hashofcicd-registry-password'" in stdin
    assert "BEGIN CERTIFICATE" in stdin and "BEGIN PRIVATE KEY" in stdin
    cert = run.named("cicd-registry-cert")
    assert cert.inputs["earlyRenewalHours"] == 30 * 24 and "server_auth" in cert.inputs["allowedUses"]
    assert run.named("ca-cert").inputs["isCaCertificate"] is True
    csr = run.named("cicd-registry-csr")
    assert run.outputs["registry"] == f"{csr.inputs['ipAddresses'][0]}:5000"


def test_every_host_trusts_the_registry_ca_and_managers_log_in(tier_run):
    tier, run = tier_run
    topo = build_topology(tier, 2)
    clients = {c.name.removeprefix("cicd-").removesuffix("-registry-client"): c
               for c in run.commands("registry-client.sh")}
    assert set(clients) == {h.name for h in topo.hosts}
    registry = next(c for c in run.of_type(CONTAINER) if c.inputs["name"] == "registry")
    ca = run.named("ca-cert")
    logins = {CI_HOST[tier]} | {m.name for m in topo.managers}
    for host, client in clients.items():
        assert "CA_CERT='-----BEGIN CERTIFICATE-----\nca-cert\n" in client.inputs["create"]
        assert f"REGISTRY={run.outputs['registry']}" in client.inputs["create"]
        assert run.depends_on(client, registry) and run.depends_on(client, run.named(f"{host}-docker"))
        assert run.depends_on(client, ca)
        logs_in = "REGISTRY_PASSWORD=generated-secret-" in client.inputs["stdin"]
        assert logs_in == (host in logins), host
        if logs_in:
            assert "stdin" in client.secret_inputs


def test_no_generated_secret_is_in_clear(tier_run):
    _, run = tier_run
    for r in run.registrations:
        for key, value in r.inputs.items():
            text = json.dumps(value)
            if any(secret in text for secret in (GENERATED_PREFIX, OAUTH_SECRET, "PRIVATE KEY", TEST_KEY,
                                                 GITEA_SECRET_KEY, DRONE_DATABASE_SECRET)):
                assert key in r.secret_inputs, f"{r.name}.{key} holds a secret in clear"
    for name in ("registry_password", "gitea_admin_password", "drone_admin_token"):
        assert run.outputs[name].startswith(GENERATED_PREFIX)


def test_secret_outputs_are_secret(tier_run):
    import pulumi

    _, run = tier_run
    outputs = run.deployment.outputs()
    for name in ("registry_password", "gitea_admin_password", "drone_admin_token"):
        assert pulumi.runtime.sync_await._sync_await(outputs[name].is_secret()), name
    assert not pulumi.runtime.sync_await._sync_await(outputs["gitea_url"].is_secret())


def test_an_image_bump_is_a_change_of_the_pulled_image():
    run = run_program(stack="ci-bump", tier="default", workers="1", ciImages={"gitea": "gitea/gitea:1.22.7"})
    names = {i.inputs["name"] for i in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert "gitea/gitea:1.22.7" in names and "gitea/gitea:1.22.6" not in names


def test_a_clone_image_for_hosts_without_docker_hub_is_pulled_and_given_to_the_runner():
    run = run_program(stack="ci-clone", tier="default", workers="1",
                      ciImages={"droneClone": "dockyard/drone-pipeline:2"})
    names = {i.inputs["name"] for i in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert "dockyard/drone-pipeline:2" in names
    (runner,) = [c for c in run.of_type(CONTAINER) if c.inputs["name"] == "drone-runner"]
    assert envs(runner)["DRONE_RUNNER_CLONE_IMAGE"] == "dockyard/drone-pipeline:2"


def test_the_ci_host_opens_registry_to_the_vpc_and_the_web_uis_to_admins():
    rules = inbound_rules(Role.CICD, "10.210.0.0/20", ("203.0.113.0/24",), (80,), ("registry", "gitea", "drone"))
    by_port = {r.port_range: set(r.source_addresses) for r in rules if r.protocol == "tcp"}
    assert by_port["5000"] == {"10.210.0.0/20"}
    assert by_port["3000"] == by_port["8000"] == {"10.210.0.0/20", "203.0.113.0/24"}


def test_the_ci_host_opens_only_the_ports_of_the_services_it_runs():
    run = run_program(stack="default", tier="default", ciServices=["registry"])
    (firewall,) = [f for f in run.of_type("digitalocean:index/firewall:Firewall") if f.inputs["name"].endswith("-cicd")]
    ports = {rule.get("portRange") for rule in firewall.inputs["inboundRules"] if rule["protocol"] == "tcp"}
    assert ports == {"22", "5000"}, "no Gitea or Drone port while they do not run"


def test_local_stack_runs_the_registry_built_into_the_vm_image():
    config = parse_config("local", {"cloud": "local"})
    assert config.ci.services == ("registry",)
    assert config.ci.images["registry"] == "dockyard/registry:2.8.2"
    full = parse_config("local", {"cloud": "local", "ciServices": ["registry", "gitea", "drone"]})
    assert full.ci.services == ("registry", "gitea", "drone")


@pytest.mark.parametrize("overrides,message", [
    ({"tier": "minimal", "ciServices": ["registry"]}, "dockyard:ciServices: the minimal tier has no CI/CD host"),
    ({"ciServices": ["drone"]}, "dockyard:ciServices: drone logs in and fetches code through gitea"),
    ({"ciServices": ["jenkins"]}, "dockyard:ciServices: unknown service 'jenkins'"),
    ({"ciImages": {"gitea": "gitea/gitea:latest"}}, "dockyard:ciImages: gitea: 'gitea/gitea:latest' must be a pinned"),
    ({"ciImages": {"nginx": "nginx:1"}}, "dockyard:ciImages: unknown image 'nginx'"),
    ({"ciImages": {"droneClone": "drone/git:latest"}}, "dockyard:ciImages: droneClone: 'drone/git:latest' must be"),
    ({"ciAdminUser": "admin"}, "dockyard:ciAdminUser: 'admin' is not allowed"),
    ({"registryGcSchedule": "sunday; rm -rf /"}, "dockyard:registryGcSchedule:"),
])
def test_ci_config_errors_say_what_to_change(overrides, message):
    with pytest.raises(ConfigError) as error:
        parse_config("s", {**BASE_CONFIG, "sshPrivateKey": True, **overrides})
    assert message in str(error.value)


def test_oauth_app_and_docker_config_helpers():
    assert parse_oauth_app("client_id=abc\nclient_secret=s3cr=t\n") == {"client_id": "abc", "client_secret": "s3cr=t"}
    with pytest.raises(ValueError, match="client_secret"):
        parse_oauth_app("client_id=abc\n")
    config = json.loads(docker_config_json("10.0.0.2:5000", "u", "p"))
    assert config == {"auths": {"10.0.0.2:5000": {"auth": "dTpw"}}}


def test_the_example_pipeline_builds_pushes_and_rolls_out_with_rollback():
    import yaml

    from components.ci_common import CI_ROOT

    root = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "web"
    pipeline = yaml.safe_load((root / ".drone.yml").read_text())
    assert [s["name"] for s in pipeline["steps"]] == ["test", "build-and-push", "deploy"]
    volumes = {v["name"]: v["host"]["path"] for v in pipeline["volumes"]}
    # the credentials file ci-files.sh writes for the runner
    assert volumes["registry-auth"] == f"{CI_ROOT}/drone/docker-config.json"
    build, deploy = pipeline["steps"][1], pipeline["steps"][2]
    assert any("docker push" in c for c in build["commands"])
    rollout = " ".join(deploy["commands"])
    assert "--update-order start-first" in rollout and "--update-failure-action rollback" in rollout
    assert "--with-registry-auth" in rollout
    for step in (build, deploy):
        assert all("from_secret" in v for v in step["environment"].values()), "no credential in the file"
    assert (root / "Dockerfile").read_text().count("HEALTHCHECK") == 1


@pytest.mark.parametrize("tier", ["default", "small", "medium"])
def test_a_stack_made_before_the_services_had_components_keeps_every_resource(tier):
    """Registry, Gitea and Drone became components of their own; what a stack made when they
    were the CiCd component's children keeps its state (an alias to that parent), so an `up`
    after the split replaces nothing: no new passwords, no recreated containers."""
    before = json.loads((FIXTURES / "cicd-children-before-split.json").read_text())[tier]
    run = run_program(stack=f"ci-{tier}", tier=tier, workers="2")
    cicd = run.of_type("dockyard:role:CiCd")[0]
    kept = []
    for typ, name in before:
        now = next(r for r in run.registrations if (r.type, r.name) == (typ, name))
        if now.parent == cicd.urn or any(a.get("parentUrn") == cicd.urn and not a.get("name")
                                         and not a.get("type") for a in now.aliases):
            kept.append(name)
    assert sorted(kept) == sorted(name for _, name in before)
    services = {r.type for r in run.registrations if r.parent == cicd.urn}
    assert {"dockyard:ci:Registry", "dockyard:ci:Gitea", "dockyard:ci:Drone"} <= services


def run_ci_tls(tmp_path: Path, roots: Path, tls, **env) -> subprocess.CompletedProcess:
    values = {"PATH": os.environ["PATH"], "CI_ROOT": str(tmp_path / "srv-ci"), "CI_ROOT_IS_DIR": "yes",
              "CA_CERT": tls.ca.read_text(),
              "WEB_CERT": tls.cert.read_text(), "WEB_KEY": tls.key.read_text(), "SYSTEM_ROOTS": str(roots),
              "WEB_OWNER": f"{os.getuid()}:{os.getgid()}", **env}
    return subprocess.run(script_command("ci-tls.sh"), env=values, capture_output=True, text=True, timeout=60)


def test_ci_tls_puts_the_certificate_the_key_for_gitea_only_and_the_roots_the_pipelines_trust(tmp_path):
    tls = make_authority(tmp_path / "ca")
    roots = make_authority(tmp_path / "public").ca  # stands for the host's bundle of public roots
    out = tmp_path / "srv-ci" / "tls"
    steps = out / "steps" / "ca-bundle.crt"
    try:
        first = run_ci_tls(tmp_path, roots, tls)
        assert first.returncode == 0, first.stderr
        assert (out / "web.crt").read_text() == tls.cert.read_text()
        assert stat.S_IMODE((out / "web.key").stat().st_mode) == 0o600, "the key is Gitea's user's alone"
        assert stat.S_IMODE((out / "web.crt").stat().st_mode) == 0o644
        bundle = (out / "ca-bundle.crt").read_text()
        assert bundle.startswith(roots.read_text()) and bundle.rstrip("\n").endswith(tls.ca.read_text().rstrip("\n"))
        assert steps.read_text() == bundle
        # what Gitea and Drone serve is what their clients' bundle verifies
        for trusted in (out / "ca-bundle.crt", steps):
            verified = subprocess.run(["openssl", "verify", "-CAfile", str(trusted), str(out / "web.crt")],
                                      capture_output=True, text=True)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        # the runner mounts the steps' copy into every step, read-write: not even a step's root
        # may change it
        with pytest.raises(PermissionError):
            steps.open("a").close()
        again = run_ci_tls(tmp_path, roots, tls)
        assert again.returncode == 0 and "writing" not in again.stderr, "safe to run twice"
        assert tls.key.read_text().strip() not in first.stderr + first.stdout, "the key is in no log"
        renewed = make_authority(tmp_path / "new-ca")
        moved = run_ci_tls(tmp_path, roots, renewed)
        assert moved.returncode == 0, moved.stderr
        assert steps.read_text().rstrip("\n").endswith(renewed.ca.read_text().rstrip("\n")), "a new CA replaces it"
        with pytest.raises(PermissionError):
            steps.open("a").close()
        no_roots = run_ci_tls(tmp_path, tmp_path / "none.crt", tls)
        assert no_roots.returncode == 0 and "trust the stack's CA only" in no_roots.stderr
        broken = run_ci_tls(tmp_path, roots, tls, WEB_KEY="not a key")
        assert broken.returncode != 0 and "WEB_KEY is no PEM private key" in broken.stderr
        unmounted = run_ci_tls(tmp_path, roots, tls, CI_ROOT_IS_DIR="")
        assert unmounted.returncode != 0 and "is not mounted" in unmounted.stderr
    finally:
        subprocess.run(["chattr", "-i", str(steps)], check=False, capture_output=True)
