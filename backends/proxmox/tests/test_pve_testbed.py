"""``anyvirt testbed proxmox``: fakepve in its own process, found through the entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

from anyvirt_proxmox.testbed import FakePveTestbed, guests_file

from anyvirt.host import Host


def test_the_testbed_serves_a_cluster_with_verified_tls(proxmox_testbed: FakePveTestbed,
                                                       proxmox_host: Host) -> None:
    testbed, testbed_host = proxmox_testbed, proxmox_host
    assert "ca=" in testbed.uri and "verify=false" not in testbed.uri
    assert [n.name for n in testbed_host.nodes.list()] == ["pve1", "pve2", "pve3"]
    vms = testbed_host.vms.list()
    assert len(vms) == 6 and {vm.node for vm in vms} == {"pve1", "pve2", "pve3"}
    assert testbed.password not in testbed.uri and testbed.password not in repr(testbed_host)


def test_generated_guests() -> None:
    guests = guests_file(nodes=4, guests=1000)["guests"]
    assert len(guests) == 1000 and len({g["vmid"] for g in guests}) == 1000
    assert {g["node"] for g in guests} == {"pve1", "pve2", "pve3", "pve4"}
    assert len(guests_file(nodes=3, guests=0)["guests"]) == 3, "one guest per node makes the node"


def test_the_testbed_is_registered() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="anyvirt.testbeds")}
    assert found.get("proxmox") == "anyvirt_proxmox.testbed:TESTBED"
    backends = {ep.name: ep.value for ep in entry_points(group="anyvirt.backends")}
    assert backends["proxmox"] == "anyvirt_proxmox.driver:ProxmoxDriver"


def test_the_cli_runs_the_testbed_plugin() -> None:
    import anyvirt
    from anyvirt import testbeds

    found = testbeds.load("proxmox")
    assert {o.name for o in found.options} == {"nodes", "guests"}
    running = found.start(nodes=2, guests=4)
    try:
        (uri,) = running.uris
        with anyvirt.connect(uri, password=running.environment["ANYVIRT_PASSWORD"]) as host:
            assert len(host.nodes.list()) == 2 and len(host.vms.list()) == 4
    finally:
        running.stop()
