"""A DigitalOcean snapshot that dockyard's droplets can boot from (`dockyard:image`): the
stock image with Docker, the NFS tools and the platform's pinned images already installed,
and nothing of any stack. A tier's bootstrap then skips its package installs and pulls.

`pulumi up` makes a short-lived builder droplet, runs docker-host.sh and image-bake.sh on it
over SSH with a key made for the build, powers it off and snapshots it; the snapshot outlives the stack
(retainOnDelete), so `pulumi destroy` then removes the builder and keeps the image. The
snapshot's name carries the recipe's digest: a changed recipe makes a new snapshot."""
import hashlib
import re
import shlex
import sys
from pathlib import Path

import pulumi
import pulumi_digitalocean as do
import pulumi_tls as tls
from pulumi_command import local, remote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from components.config import DEFAULT_CI_IMAGES  # noqa: E402
from components.remote import run_script, script_digest, script_text  # noqa: E402

config = pulumi.Config()
region = config.get("region") or "fra1"
base_image = config.get("baseImage") or "ubuntu-24-04-x64"
size = config.get("size") or "s-1vcpu-2gb"
docker_version = config.get("dockerVersion") or ""
images = config.get_object("images") or sorted(set(DEFAULT_CI_IMAGES.values()))

problems = []
if not re.fullmatch(r"[a-z]{3}\d", region):
    problems.append(f"dockyard-image:region {region!r} is not a DigitalOcean region slug such as fra1")
if not isinstance(images, list) or not all(isinstance(i, str) and re.fullmatch(r"[\w./-]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?", i)
                                           for i in images):
    problems.append("dockyard-image:images must be a list of image references such as registry:2.8.3")
if problems:
    raise pulumi.RunError("; ".join(problems))

recipe = hashlib.sha256("\n".join([base_image, docker_version, *images, script_digest("docker-host.sh"),
                                   script_digest("image-bake.sh")]).encode()).hexdigest()[:12]
name = f"dockyard-{pulumi.get_stack()}"

key = tls.PrivateKey("builder-key", algorithm="ED25519")
uploaded_key = do.SshKey("builder-key", name=f"{name}-builder", public_key=key.public_key_openssh)
# the recipe's digest in user_data: a changed recipe replaces the builder, as the bake
# leaves a builder nobody can log in to again
builder = do.Droplet("builder", name=f"{name}-builder", image=base_image, region=region, size=size,
                     ssh_keys=[uploaded_key.fingerprint], tags=["dockyard-image-builder"],
                     user_data=f"#cloud-config\n# dockyard image recipe {recipe}\n")
connection = remote.ConnectionArgs(host=builder.ipv4_address, user="root",
                                   private_key=pulumi.Output.secret(key.private_key_openssh),
                                   dial_error_limit=30, per_dial_timeout=15)
engine = run_script("builder-docker", connection=connection, script="docker-host.sh",
                    env={"DOCKER_VERSION": docker_version})
bake = run_script("builder-bake", connection=connection, script="image-bake.sh", env={"IMAGES": " ".join(images)},
                  opts=pulumi.ResourceOptions(depends_on=[engine]))
# a snapshot of a powered-off droplet is consistent (DigitalOcean's advice)
do_config = pulumi.Config("digitalocean")
power_off = local.Command(
    "builder-power-off",
    create=f"bash -c {shlex.quote(script_text('droplet-power-off.sh'))} droplet-power-off.sh",
    environment={"DROPLET_ID": builder.id, "API": (do_config.get("apiEndpoint") or "https://api.digitalocean.com"),
                 "DIGITALOCEAN_TOKEN": do_config.require_secret("token")},
    triggers=[f"droplet-power-off.sh@{script_digest('droplet-power-off.sh')}"],
    opts=pulumi.ResourceOptions(depends_on=[bake]),
)
snapshot = do.DropletSnapshot("image", droplet_id=builder.id, name=f"{name}-{recipe}",
                              opts=pulumi.ResourceOptions(depends_on=[power_off], retain_on_delete=True))

pulumi.export("snapshot_name", snapshot.name)
pulumi.export("snapshot_id", snapshot.id)
pulumi.export("use_it", snapshot.id.apply(lambda i: f"pulumi config set dockyard:image {i} --stack <your stack>"))
