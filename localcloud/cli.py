"""Create, list and delete dockyard's local VMs.

Layout: one network namespace per stack network holds a bridge, the VMs' tap devices and
their qemu processes (network.py, vm.py); each VM boots the cached base image
(base_image.py). `python3 -m localcloud --help` lists the commands."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from localcloud.base_image import ensure_image
from localcloud.network import network_down, network_up
from localcloud.system import LocalCloudError, log
from localcloud.vm import cleanup, create, delete, list_vms


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m localcloud", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build the base image if its recipe changed; print its directory")
    p = sub.add_parser("template", help="make the warm template VMs of this size start from (once per base "
                                        "image, size and archive set); print its directory")
    p.add_argument("--memory", type=int, default=1024)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--bake", action="append", default=[], metavar="ARCHIVE")
    p = sub.add_parser("network-up", help="create a VM network (idempotent)")
    p.add_argument("--net", required=True)
    p.add_argument("--cidr", required=True)
    p = sub.add_parser("network-down", help="delete a VM network")
    p.add_argument("--net", required=True)
    p = sub.add_parser("create", help="start a VM (idempotent); prints its name, address and data disk as JSON")
    p.add_argument("--net", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True, help="IP/prefix, e.g. 10.231.0.11/24")
    p.add_argument("--hostname", help="its host name inside (default: --name)")
    p.add_argument("--key", required=True, help="the authorized_keys line for root")
    p.add_argument("--data-gb", type=int, default=0)
    p.add_argument("--memory", type=int, default=1024)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for SSH (0: do not wait)")
    p.add_argument("--bake", action="append", default=[], metavar="ARCHIVE",
                   help="a docker-archive the VM's Docker has when it starts (repeat for more): it goes into "
                        "the warm template, so that it is loaded once, not into every VM")
    p = sub.add_parser("delete", help="stop a VM and delete its disks and tap (idempotent)")
    p.add_argument("--net", required=True)
    p.add_argument("--name", required=True)
    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--net")
    p = sub.add_parser("cleanup", help="delete every VM of a network and the network")
    p.add_argument("--net", required=True)
    p = sub.add_parser("ci-images", help="build Gitea, Drone and its runner here; write them as docker-archives "
                                         "to OUT and print the dockyard:ciImages settings for them as JSON")
    p.add_argument("--out", required=True)
    p = sub.add_parser("preview-image", help="build the preview pipeline's image (the engine, its plugins and "
                                             "the Python requirements' wheels) here; write it as a docker-archive "
                                             "to OUT and print its tag")
    p.add_argument("--out", required=True)
    p = sub.add_parser("platform-images", help="build traefik here; write it as a docker-archive to OUT and "
                                               "print the dockyard:platformImages settings for it as JSON")
    p.add_argument("--out", required=True)
    p = sub.add_parser("registry-image", help="write the dockyard/registry image as a docker-archive")
    p.add_argument("--out", required=True)
    p = sub.add_parser("backup-server", help="run restic's REST server here (built from the Go module proxy "
                                             "once): a backup repository the VMs of a network reach, without "
                                             "authentication, so listen only on the network's own address")
    p.add_argument("--path", required=True, help="where the repositories are kept")
    p.add_argument("--listen", required=True, help="ADDRESS:PORT, e.g. 10.231.0.1:8765")
    p = sub.add_parser("web-image", help="write the dockyard/web:VERSION test app as a docker-archive")
    p.add_argument("--version", required=True)
    p.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    try:
        if args.command == "image":
            print(ensure_image())
        elif args.command == "template":
            from localcloud.warm import ensure_template

            print(ensure_template(args.memory, args.cpus, [Path(a) for a in args.bake]))
        elif args.command == "network-up":
            print(network_up(args.net, args.cidr))
        elif args.command == "network-down":
            network_down(args.net)
        elif args.command == "create":
            print(json.dumps(create(args.net, args.name, args.address, args.key, args.data_gb, args.memory,
                                    args.cpus, args.wait, [Path(a) for a in args.bake], args.hostname)))
        elif args.command == "delete":
            delete(args.net, args.name)
        elif args.command == "list":
            for vm in list_vms(args.net):
                print(f"{vm['network']}\t{vm['name']}\t{vm['ip']}\t{vm['state']}")
        elif args.command == "cleanup":
            cleanup(args.net)
        elif args.command == "ci-images":
            from localcloud.ci_images import build_ci_images

            print(json.dumps(build_ci_images(Path(args.out))))
        elif args.command == "preview-image":
            from localcloud.preview_image import build_preview_image

            print(build_preview_image(Path(args.out)))
        elif args.command == "platform-images":
            from localcloud.platform_images import build_platform_images

            print(json.dumps(build_platform_images(Path(args.out))))
        elif args.command == "registry-image":
            from localcloud.images import registry_image, write_archive

            print(write_archive(registry_image(), Path(args.out)))
        elif args.command == "backup-server":
            import os

            from localcloud.ci_images import REST_SERVER, go_binaries

            server = go_binaries(REST_SERVER)["rest-server"]
            os.execv(server, [str(server), "--path", args.path, "--listen", args.listen, "--no-auth"])
        elif args.command == "web-image":
            from localcloud.images import deb_file, web_image, write_archive

            print(write_archive(web_image(args.version, deb_file("busybox-static", "/bin/busybox")), Path(args.out)))
    except LocalCloudError as error:
        log(f"error: {error}")
        return 1
    return 0
