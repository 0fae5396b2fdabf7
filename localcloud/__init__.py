"""dockyard's local cloud: Debian VMs under qemu on a private network that the host reaches.
Host-side tooling, standard library only; `python3 -m localcloud --help`."""
