"""The platform's services on the swarm (issue 15): traefik as the ingress, Portainer as the
panel, on mocks per tier: which services exist, where they run, that their passwords stay
secrets, and which firewall opens 80 and 443."""
import json

import pytest
import yaml

from components.config import ConfigError, parse_config
from components.ingress import dynamic_config, traefik_args
from components.topology import build_topology
from tests.harness import BASE_CONFIG, GENERATED_PREFIX, run_program

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
NETWORK = "docker:index/network:Network"
FIREWALL = "digitalocean:index/firewall:Firewall"
TIERS = ("minimal", "default", "small", "medium")
OBSERVABILITY = {"node-exporter", "cadvisor", "prometheus", "alertmanager", "grafana"}


@pytest.fixture(scope="module", params=TIERS)
def tier_run(request):
    return request.param, run_program(stack=f"svc-{request.param}", tier=request.param, workers="2")


def services(run) -> dict:
    return {s.inputs["name"]: s for s in run.of_type(SERVICE)}


def test_every_tier_runs_traefik_on_the_managers_and_portainer_by_default(tier_run):
    tier, run = tier_run
    found = services(run)
    assert set(found) == {"traefik", "portainer-agent", "portainer", *OBSERVABILITY}
    traefik = found["traefik"]
    assert "global" in traefik.inputs["mode"]
    assert traefik.inputs["taskSpec"]["placement"]["constraints"] == ["node.role==manager"]
    ports = {(p["publishedPort"], p["publishMode"]) for p in traefik.inputs["endpointSpec"]["ports"]}
    assert ports == {(80, "host"), (443, "host")}, "80/443 on the managers themselves, not the mesh"
    assert traefik.inputs["taskSpec"]["containerSpec"]["image"] == "traefik:v3.6.12"
    agent = found["portainer-agent"]
    assert "global" in agent.inputs["mode"] and "ports" not in agent.inputs["endpointSpec"], \
        "on every node, publishing nothing"
    server = found["portainer"]
    assert server.inputs["mode"]["replicated"]["replicas"] == 1
    first = build_topology(tier, 2).managers[0].name
    # pinned to the first manager's node, whose volume keeps its data
    assert server.inputs["taskSpec"]["placement"]["constraints"] == [f"node.id==node-{first}-manager-swarm-init"]
    assert [m["type"] for m in server.inputs["taskSpec"]["containerSpec"]["mounts"]] == ["volume"]
    assert "ports" not in server.inputs["endpointSpec"], "reached through traefik only"
    labels = {label["label"]: label["value"] for label in server.inputs["labels"]}
    assert labels["traefik.http.routers.portainer.rule"] == f"Host(`portainer.svc-{tier}.dockyard.internal`)"


def test_the_services_come_from_the_first_managers_docker_once_the_swarm_exists(tier_run):
    tier, run = tier_run
    first = build_topology(tier, 2).managers[0].name
    provider = run.named(f"{first}-swarm-docker-provider")
    init = run.named(f"{first}-manager-swarm-init")
    assert run.depends_on(provider, init)
    assert run.depends_on(provider, run.named("a-master-bastion")), "after the master's sshd reload"
    for service in run.of_type(SERVICE):
        assert run.depends_on(service, init)
    platform = [r for r in run.of_type(SERVICE) + run.of_type(SECRET) + run.of_type(NETWORK)
                if r.name.startswith(("ingress-", "panel-"))]
    # traefik, the agent and the server; the ingress's files and the panel's password; two networks
    assert len(platform) == 3 + 4 + 2
    machine = next(r for r in run.registrations if r.name in (f"do-{first}", f"local-{first}")
                   and r.type.startswith(("digitalocean:index/droplet", "command:")))
    for resource in platform:
        assert resource.provider.startswith(provider.urn + "::"), f"{resource.name} is made on the swarm's docker"
        # a destroy with that manager dead must not try to reach it to delete them one by one
        assert resource.deleted_with == machine.urn


def test_passwords_and_keys_are_secrets_everywhere(tier_run):
    _, run = tier_run
    for secret in run.of_type(SECRET):
        assert "data" in secret.secret_inputs and "data" in secret.additional_secret_outputs
        assert "name" not in secret.secret_inputs, "its name is a digest and shows in a preview"
    passwords = {f"{GENERATED_PREFIX}ingress-dashboard-password", f"{GENERATED_PREFIX}panel-admin-password"}
    hashes = {"$2a$10$hashofingress-dashboard-password"}
    for resource in run.registrations:
        shown = json.dumps({k: v for k, v in resource.inputs.items() if k not in resource.secret_inputs})
        assert not [p for p in passwords | hashes if p in shown], f"{resource.name} shows a password"
    assert run.outputs["ingress_dashboard_password"] == f"{GENERATED_PREFIX}ingress-dashboard-password"
    assert run.outputs["panel_admin_password"] == f"{GENERATED_PREFIX}panel-admin-password"
    # Portainer reads its admin password from a swarm secret at its first start
    server = services(run)["portainer"]
    args = server.inputs["taskSpec"]["containerSpec"]["args"]
    assert args[args.index("--admin-password-file") + 1] == "/run/secrets/portainer-admin-password"
    (mounted,) = server.inputs["taskSpec"]["containerSpec"]["secrets"]
    assert mounted["fileName"] == "/run/secrets/portainer-admin-password"


def test_the_ingress_certificate_is_the_stacks_ca_for_the_domain_and_its_names(tier_run):
    tier, run = tier_run
    csr = run.named("ingress-default-csr")
    domain = f"svc-{tier}.dockyard.internal"
    assert csr.inputs["dnsNames"] == [domain, f"*.{domain}"]
    assert len(csr.inputs["ipAddresses"]) == len(build_topology(tier, 2).managers)
    cert = run.named("ingress-default-cert")
    assert run.depends_on(cert, run.named("ca-cert"))
    assert run.outputs["ingress_dashboard_url"] == f"https://traefik.{domain}/dashboard/"
    assert "BEGIN CERTIFICATE" in run.outputs["ca_certificate"]


def test_80_and_443_open_on_the_managers_only_while_the_ingress_runs(tier_run):
    tier, run = tier_run
    def public(role):
        fw = [f for f in run.of_type(FIREWALL) if f.inputs["name"].endswith(f"-{role}")]
        return {r.get("portRange") for f in fw for r in f.inputs["inboundRules"]
                if "0.0.0.0/0" in r.get("sourceAddresses", [])}
    assert public("manager") == {"80", "443"}
    assert public("worker") == set(), "the workers publish nothing while traefik serves 80 and 443"
    without = run_program(stack=f"bare-{tier}", tier=tier, workers="1", platformServices=[])
    assert services(without) == {}
    assert {r.get("portRange") for f in without.of_type(FIREWALL) if f.inputs["name"].endswith("-worker")
            for r in f.inputs["inboundRules"] if "0.0.0.0/0" in r.get("sourceAddresses", [])} == {"80", "443"}, \
        "without the ingress, the routing mesh publishes 80 and 443 on every swarm node as before"


def test_the_panel_can_be_left_out_and_local_stacks_run_none_by_default():
    run = run_program(stack="only-ingress", tier="default", workers="1", platformServices=["ingress"])
    assert set(services(run)) == {"traefik"}
    assert "panel_admin_password" not in run.outputs
    assert parse_config("l", {"cloud": "local"}).platform.services == ()
    assert parse_config("d", BASE_CONFIG).platform.services == ("ingress", "panel", "monitoring", "dashboards")


@pytest.mark.parametrize("changes, message", [
    ({"platformServices": ["ingres"]}, "unknown service 'ingres'"),
    ({"platformServices": ["panel"]}, "'panel' is served through the ingress"),
    ({"publicPorts": ["443"]}, "port 443 is the ingress's"),
    ({"platformImages": {"traefik": "traefik:latest"}}, "must be a pinned image reference"),
    ({"platformImages": {"nginx": "nginx:1"}}, "unknown image 'nginx'"),
    ({"domain": "not a domain"}, "is not a DNS name"),
    ({"acmeEmail": "ops@example.com"}, "set dockyard:domain too"),
    ({"acmeEmail": "nobody", "domain": "apps.example.com"}, "is not an email address"),
    ({"cloud": "local", "acmeEmail": "ops@example.com", "domain": "apps.example.com"},
     "Let's Encrypt cannot reach local VMs"),
])
def test_bad_platform_settings_are_refused_before_any_resource(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_config("s", {**BASE_CONFIG, **changes})


def test_acme_is_used_only_when_the_stack_sets_an_email():
    stack_ca = parse_config("s", BASE_CONFIG).platform
    assert not [a for a in traefik_args(stack_ca) if "acme" in a or "certresolver" in a]
    acme = parse_config("s", {**BASE_CONFIG, "domain": "Apps.Example.com", "acmeEmail": "ops@example.com"}).platform
    assert acme.domain == "apps.example.com"
    args = traefik_args(acme)
    assert "--certificatesresolvers.letsencrypt.acme.email=ops@example.com" in args
    assert "--entrypoints.websecure.http.tls.certresolver=letsencrypt" in args
    run = run_program(stack="acme", tier="default", workers="1", domain="apps.example.com", acmeEmail="ops@example.com")
    mounts = services(run)["traefik"].inputs["taskSpec"]["containerSpec"]["mounts"]
    assert {"type": "volume", "source": "dockyard-traefik-acme", "target": "/data"} in mounts


def test_the_dynamic_configuration_routes_the_dashboard_behind_basic_auth():
    config = yaml.safe_load(dynamic_config("apps.example.com", "admin:$2a$10$abc"))
    router = config["http"]["routers"]["dashboard"]
    assert router["rule"] == "Host(`traefik.apps.example.com`)"
    assert router["service"] == "api@internal" and router["middlewares"] == ["dashboard-auth"]
    assert config["http"]["middlewares"]["dashboard-auth"]["basicAuth"]["users"] == ["admin:$2a$10$abc"]
    default = config["tls"]["stores"]["default"]["defaultCertificate"]
    assert default == {"certFile": "/run/secrets/ingress-cert.pem", "keyFile": "/run/secrets/ingress-key.pem"}
    # what traefik reads is what the service mounts
    run = run_program(stack="files", tier="default", workers="1", platformServices=["ingress"])
    spec = services(run)["traefik"].inputs["taskSpec"]["containerSpec"]
    mounted = {s["fileName"] for s in spec["secrets"]}
    assert mounted == {"/run/secrets/traefik-dynamic.yml", *default.values()}
    assert "--providers.file.filename=/run/secrets/traefik-dynamic.yml" in spec["args"]


def test_a_changed_secret_is_a_new_swarm_secret_by_name():
    from components.swarm_service import content_name
    assert content_name("dockyard-x", "one") != content_name("dockyard-x", "two")
    assert content_name("dockyard-x", "one") == content_name("dockyard-x", "one")


def test_the_swarms_docker_resources_are_made_one_after_another(tier_run):
    """A dozen ssh handshakes at once through the master overwhelmed a VM's sshd in the e2e:
    each platform resource waits for the one before, so the first opens the shared connection."""
    _, run = tier_run
    made = [r for r in run.registrations if r.type.startswith("docker:index/")
            and r.name.startswith(("ingress-", "panel-", "monitoring-"))]
    assert len(made) > 10
    for before, resource in zip(made, made[1:]):
        assert before.urn in resource.dependencies, f"{resource.name} does not wait for {before.name}"


def test_only_the_providers_own_noise_is_ignored_never_a_setting(tier_run):
    """pulumi-docker plans an unset env/sysctl map and restart window as changes on every
    preview (the e2e's second `up` saw them); those are left alone, and nothing a service sets."""
    _, run = tier_run
    for service in run.of_type(SERVICE):
        assert {"taskSpec.containerSpec.sysctl", "taskSpec.restartPolicy.window"} <= set(service.ignore_changes)
        sets_env = bool(service.inputs["taskSpec"]["containerSpec"].get("env"))
        assert ("taskSpec.containerSpec.env" in service.ignore_changes) is not sets_env, service.name
        assert not [p for p in service.ignore_changes if "image" in p or "secrets" in p or "args" in p]


def test_only_traefik_has_a_virtual_ip_the_others_are_reached_by_task_address():
    """A virtual IP costs every container on the network an IPVS balancer per service: the
    platform's services without a published port go without one."""
    run = run_program(stack="vip", tier="default", workers="1",
                      platformServices=["ingress", "panel", "monitoring", "dashboards", "logs"])
    modes = {name: s.inputs.get("endpointSpec", {}).get("mode") for name, s in services(run).items()}
    assert modes.pop("traefik") != "dnsrr", "its ports are published (host mode)"
    assert set(modes.values()) == {"dnsrr"}, modes
    assert len(modes) == 9
