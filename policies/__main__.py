"""dockyard's CrossGuard pack. Only assembles the policies in dockyard_policies: building a
PolicyPack starts the analyzer server and blocks, so nothing else may import this file."""
from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, PolicyPack, ResourceValidationPolicy,
                           StackValidationPolicy)

import dockyard_policies as p

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

PolicyPack(
    name="dockyard",
    enforcement_level=MANDATORY,
    policies=[
        StackValidationPolicy(
            name="swarm-manager-count", description="Swarm managers per stack: odd, between 1 and 7.",
            validate=p.swarm_manager_count),
        ResourceValidationPolicy(
            name="no-control-ports-to-internet",
            description="No firewall rule opens 2375, 2376, 2377, 7946, 4789, 111 or 2049 to the internet.",
            validate=p.no_control_ports_to_internet),
        ResourceValidationPolicy(
            name="ssh-only-master",
            description="SSH from beyond the VPC only on the master, never from the whole internet.",
            validate=p.ssh_only_master_from_admins,
            config_schema=PolicyConfigSchema(properties={"adminCidrs": {"type": "array", "items": {"type": "string"}}})),
        StackValidationPolicy(
            name="ssh-from-admin-cidrs", description="The master's SSH sources are the stack's dockyard:adminCidrs.",
            validate=p.ssh_sources_match_admin_cidrs),
        ResourceValidationPolicy(
            name="droplet-in-vpc-monitored-tagged",
            description="Every droplet is in a VPC, has monitoring on, and is tagged with stack and role.",
            validate=p.droplet_in_vpc_monitored_tagged),
        ResourceValidationPolicy(
            name="droplet-size-allowed", description="Droplet sizes come from an allowed list.",
            validate=p.droplet_size_allowed,
            config_schema=PolicyConfigSchema(properties={
                "allowedSizes": {"type": "array", "items": {"type": "string"}},
                "prices": {"type": "object"}})),
        StackValidationPolicy(
            name="monthly-cost-within-budget", description="The stack's estimated monthly cost is within budget.",
            validate=p.monthly_cost_within_budget,
            config_schema=PolicyConfigSchema(properties={
                "monthlyBudget": {"type": "number"}, "prices": {"type": "object"},
                "volumePricePerGb": {"type": "number"}})),
        ResourceValidationPolicy(
            name="registry-tls-and-auth", description="The registry is served with TLS and requires auth.",
            validate=p.registry_tls_and_auth),
        StackValidationPolicy(
            name="stateful-volumes-kept",
            description="NFS and CI volumes survive deletes unless the stack is disposable.",
            validate=p.stateful_volumes_kept),
        StackValidationPolicy(
            name="single-manager-warning", description="Small and medium tiers should run more than one manager.",
            validate=p.single_manager_warning, enforcement_level=ADVISORY),
        StackValidationPolicy(
            name="no-workers-warning", description="A stack without workers runs services on its managers.",
            validate=p.no_workers_warning, enforcement_level=ADVISORY),
    ],
)
