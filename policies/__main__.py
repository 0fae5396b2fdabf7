"""dockyard's CrossGuard pack: the policies of dockyard_policies.POLICIES. Building a
PolicyPack starts the analyzer server and blocks, so nothing else may import this file."""
from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, PolicyPack, ResourceValidationPolicy,
                           StackValidationPolicy)

from dockyard_policies import POLICIES

PolicyPack(
    name="dockyard",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        (StackValidationPolicy if policy.stack else ResourceValidationPolicy)(
            name=policy.name, description=policy.description, validate=policy.validate,
            enforcement_level=EnforcementLevel.ADVISORY if policy.advisory else EnforcementLevel.MANDATORY,
            config_schema=PolicyConfigSchema(properties=dict(policy.config)) if policy.config else None)
        for policy in POLICIES
    ],
)
