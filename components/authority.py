"""The stack's own certificate authority (pulumi-tls): the registry, Gitea, Drone and the
ingress serve certificates it signs, and every host trusts it. Its key stays a secret in the state."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import pulumi
import pulumi_tls as tls

CA_YEARS = 10
CERT_DAYS = 730
CERT_RENEW_DAYS = 30  # `pulumi up` in the last 30 days of a certificate makes a new one


def pem_digest(*pems: pulumi.Input[str]) -> pulumi.Output[str]:
    """A short digest of certificates, for a container label: a new certificate (or CA)
    changes the label, which replaces the container, which then reads the new files."""
    return pulumi.Output.all(*pems).apply(lambda values: hashlib.sha256("".join(values).encode()).hexdigest()[:16])


@dataclass
class Issued:
    """A key and the certificate the authority signed for it."""

    private_key_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]


@dataclass
class StackAuthorityArgs:
    stack: str
    # URNs the CA's resources had before they moved here (state kept across the move)
    previous_parent_urn: Optional[str] = None
    previous_names: dict[str, str] = field(default_factory=dict)


class StackAuthority(pulumi.ComponentResource):
    def __init__(self, name: str, args: StackAuthorityArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("dockyard:pki:StackAuthority", name, None, opts)

        def moved(suffix: str) -> pulumi.ResourceOptions:
            old = args.previous_names.get(suffix)
            aliases = [pulumi.Alias(name=old, parent=args.previous_parent_urn)] if old else None
            return pulumi.ResourceOptions(parent=self, aliases=aliases)

        self._key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=moved("key"))
        ca = tls.SelfSignedCert(
            f"{name}-cert",
            private_key_pem=self._key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_YEARS * 365 * 24,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"dockyard {args.stack} CA", organization="dockyard"),
            opts=moved("cert"),
        )
        self.cert_pem: pulumi.Output[str] = ca.cert_pem
        self.register_outputs({"cert_pem": self.cert_pem})

    def issue(self, name: str, parent: pulumi.Resource, common_name: str, dns_names: Sequence[str] = (),
              ip_addresses: Union[Sequence[pulumi.Input[str]], pulumi.Output[list[str]]] = (),
              moved_from: Optional[pulumi.Resource] = None) -> Issued:
        """A server key and certificate, children of `parent` (and before that of `moved_from`,
        whose state they keep), renewed by an update in their last CERT_RENEW_DAYS days."""
        child = pulumi.ResourceOptions(parent=parent,
                                       aliases=[pulumi.Alias(parent=moved_from)] if moved_from is not None else None)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=common_name, organization="dockyard"),
            ip_addresses=ip_addresses if isinstance(ip_addresses, pulumi.Output) else list(ip_addresses),
            dns_names=list(dns_names),
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self._key.private_key_pem,
            ca_cert_pem=self.cert_pem,
            validity_period_hours=CERT_DAYS * 24,
            early_renewal_hours=CERT_RENEW_DAYS * 24,
            allowed_uses=["server_auth", "digital_signature", "key_encipherment"],
            opts=child,
        )
        return Issued(key.private_key_pem, cert.cert_pem)
