"""Table 5.1 of the thesis: hosts, roles and placement per tier."""
import pytest

from components.topology import Role, build_topology

M, C, N, G, W = Role.MASTER, Role.CICD, Role.NFS, Role.MANAGER, Role.WORKER


def roles(topo):
    return {h.name: set(h.roles) for h in topo.hosts}


@pytest.mark.parametrize("workers", [0, 1, 4])
def test_minimal_is_one_host_plus_workers(workers):
    topo = build_topology("minimal", workers)
    assert len(topo.hosts) == 1 + workers
    assert roles(topo)["a"] == {M, N, G}
    assert not topo.with_role(C), "minimal uses third-party CI/CD"
    assert [m.name for m in topo.managers] == ["a"]


@pytest.mark.parametrize("workers", [0, 3])
def test_default_splits_master_and_cluster(workers):
    topo = build_topology("default", workers)
    assert len(topo.hosts) == 2 + workers
    assert roles(topo)["a"] == {M, C}
    assert roles(topo)["b"] == {N, G}
    data = topo.export("data")
    assert (data.server, data.writers, data.cluster_readable) == ("b", ("b",), True)


def test_small_has_three_managers_and_a_read_write_split():
    topo = build_topology("small", 2)
    assert len(topo.hosts) == 5 + 2
    assert roles(topo)["a"] == {M, C}
    assert roles(topo)["b"] == {N}
    assert [m.name for m in topo.managers] == ["c1", "c2", "c3"]
    rw, ro = topo.export("rw"), topo.export("ro")
    assert rw.server == ro.server == "b"
    assert not rw.cluster_readable and ro.cluster_readable
    for manager in ("c1", "c2", "c3"):
        assert {(m.export, m.writable) for m in topo.mounts_of(manager)} == {("rw", True), ("ro", True)}
    for worker in ("w1", "w2"):
        assert [(m.export, m.writable) for m in topo.mounts_of(worker)] == [("ro", False)]


def test_medium_has_eleven_hosts_plus_workers():
    topo = build_topology("medium", 3)
    assert len(topo.hosts) == 11 + 3
    assert roles(topo)["a"] == {M}
    assert roles(topo)["b"] == {C}
    assert [h.name for h in topo.with_role(N)] == ["c1", "c2"]
    assert [m.name for m in topo.managers] == [f"d{i}" for i in range(1, 8)]
    rw, ro = topo.export("rw"), topo.export("ro")
    assert (rw.server, ro.server) == ("c1", "c2")
    assert ro.replica_of == "rw" and ro.cluster_readable and ro.writers == ()
    assert "c2" in rw.readers, "the read server copies the write server"
    assert [(m.export, m.writable) for m in topo.mounts_of("w3")] == [("ro", False)]


@pytest.mark.parametrize("tier", ["minimal", "default", "small", "medium"])
def test_every_worker_mounts_only_read_only(tier):
    topo = build_topology(tier, 2)
    for worker in topo.workers:
        assert topo.mounts_of(worker.name), f"{worker.name} mounts nothing"
        assert not any(m.writable for m in topo.mounts_of(worker.name))
        assert worker.roles == frozenset({W})


@pytest.mark.parametrize("tier", ["minimal", "default", "small", "medium"])
def test_stateful_hosts_have_volumes(tier):
    topo = build_topology(tier, 1)
    for host in topo.hosts:
        if host.has(N):
            assert host.volume == "nfs"
        elif host.has(C):
            assert host.volume == "ci"
        else:
            assert host.volume is None


def test_manager_count_is_settable_in_small_and_medium_only():
    assert len(build_topology("small", 0, managers=5).managers) == 5
    assert len(build_topology("medium", 0, managers=3).managers) == 3
    with pytest.raises(ValueError):
        build_topology("default", 0, managers=3)
    with pytest.raises(ValueError):
        build_topology("small", 0, managers=4)
