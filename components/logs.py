"""Central logs: promtail on every node reads every container's log through its Docker
engine and pushes it to Loki, which keeps it on a volume of the first manager for the
configured retention. Loki answers through the ingress behind the dashboard's password
(loki.<domain>) and is Grafana's second data source when the dashboards run. Resources come
from the swarm's docker provider (opts.providers), one after another (swarm_service.Chain)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker as docker

from .swarm_service import PlatformServiceArgs, bind, on_node, secret_file, service, swarm_secret, volume
from .monitoring import behind_ingress

NETWORK = "dockyard-logs"
LOKI_PORT = 3100
PROMTAIL_PORT = 9080
# promtail's read positions per node, so that a restarted promtail goes on where it was
POSITIONS_VOLUME = "dockyard-promtail-positions"
GRAFANA_DATASOURCE = Path(__file__).parent / "observability" / "grafana" / "datasource-loki.yml"


def loki_config(retention: str) -> str:
    """loki.yml (JSON is YAML): one process with every role, its index and chunks on the
    volume, and the compactor deleting what is older than the retention."""
    return json.dumps({
        "auth_enabled": False,
        "server": {"http_listen_port": LOKI_PORT, "grpc_listen_port": 9096, "log_level": "warn"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": "/loki",
            "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{"from": "2024-01-01", "store": "tsdb", "object_store": "filesystem",
                                       "schema": "v13", "index": {"prefix": "index_", "period": "24h"}}]},
        # no deleting through the API: any service on Loki's networks could reach it
        "limits_config": {"retention_period": retention, "deletion_mode": "disabled"},
        "compactor": {"working_directory": "/loki/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
        "analytics": {"reporting_enabled": False},
    }, indent=2)


def promtail_config() -> str:
    """promtail.yml: every container of the node, found and read through the node's Docker
    engine, labelled with its node, swarm service and container name. ${NODE} is the node's
    hostname (the service sets it from a swarm template; promtail expands it)."""
    label = "__meta_docker_container_label_"
    return json.dumps({
        "server": {"http_listen_port": PROMTAIL_PORT, "grpc_listen_port": 0, "log_level": "warn"},
        "positions": {"filename": "/positions/positions.yaml"},
        "clients": [{"url": f"http://loki:{LOKI_PORT}/loki/api/v1/push", "external_labels": {"node": "${NODE}"}}],
        "scrape_configs": [{
            "job_name": "containers",
            "docker_sd_configs": [{"host": "unix:///var/run/docker.sock", "refresh_interval": "15s"}],
            "relabel_configs": [
                {"source_labels": ["__meta_docker_container_name"], "regex": "/(.*)", "target_label": "container"},
                {"source_labels": [f"{label}com_docker_swarm_service_name"], "target_label": "service"},
                {"source_labels": [f"{label}com_docker_stack_namespace"], "target_label": "stack"},
                {"source_labels": ["__meta_docker_container_log_stream"], "target_label": "stream"},
            ],
        }],
    }, indent=2)


@dataclass(kw_only=True)
class LogsArgs(PlatformServiceArgs):
    """Loki's: it keeps its data on `server_node_id`'s volume."""


class Logs(pulumi.ComponentResource):
    def __init__(self, name: str, args: LogsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:platform:Logs", name, None, opts)
        chain, settings = args.chain(self), args.settings
        images = settings.images

        # not attachable: a container started by hand cannot join it to read promtail's pushes
        self.network = chain.add(docker.Network(f"{name}-network", name=NETWORK, driver="overlay",
                                                opts=chain.opts()))
        loki_settings = chain.add(swarm_secret(f"{name}-loki-config", "dockyard-loki-config",
                                               loki_config(settings.logs_retention), chain.opts()))
        self.loki = service(
            f"{name}-loki", chain, name="loki", image=images["loki"], replicas=1,
            labels=behind_ingress("loki", settings.domain, LOKI_PORT),
            # root: the volume Docker creates is root's
            user="0", args=["-config.file=/run/secrets/loki.yml"], mounts=[volume("dockyard-loki-data", "/loki")],
            secrets=[secret_file(loki_settings, "/run/secrets/loki.yml")],
            constraints=[on_node(args.server_node_id)],
            # promtail pushes on the logs network; traefik and Grafana reach it on the ingress's
            networks=[self.network.id, args.ingress_network_id])
        shipper_settings = chain.add(swarm_secret(f"{name}-promtail-config", "dockyard-promtail-config",
                                                  promtail_config(), chain.opts()))
        self.promtail = service(
            f"{name}-promtail", chain, name="promtail", image=images["promtail"], networks=[self.network.id],
            user="0", args=["-config.file=/run/secrets/promtail.yml", "-config.expand-env=true"],
            env={"NODE": "{{.Node.Hostname}}"},
            # read-only stops writes to the socket file, not calls to the API: promtail
            # can do what root can on its node, as Prometheus and traefik can
            mounts=[bind("/var/run/docker.sock", "/var/run/docker.sock", read_only=True),
                    volume(POSITIONS_VOLUME, "/positions")],
            secrets=[secret_file(shipper_settings, "/run/secrets/promtail.yml")], memory_mib=128)
        self.last = chain.last
        self.url = f"https://loki.{settings.domain}/"
        self.register_outputs({"loki_url": self.url})

