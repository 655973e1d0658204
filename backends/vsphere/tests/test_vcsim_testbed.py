# mypy: disable-error-code="no-untyped-call"
"""The vcsim testbed: built from Debian's govmomi source, really served, really spoken to by pyvmomi."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from anyvirt_vsphere.testbed import vcsim as vcsim_testbed
from anyvirt_vsphere.testbed.vcsim import (
    Vcsim,
    VcsimBuildError,
    apply_unified_diff,
    build_vcsim,
    default_cache_dir,
)
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def connect(sim: Vcsim, context: ssl.SSLContext | None = None, password: str | None = None) -> Any:
    return SmartConnect(
        host=sim.host,
        port=sim.port,
        user=sim.username,
        pwd=sim.password if password is None else password,
        sslContext=context if context is not None else sim.ssl_context(),
        connectionPoolTimeout=10,
    )


def collect(si: Any, kind: type, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Every object of `kind` with the given properties, in one PropertyCollector call."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        spec = PC.FilterSpec(
            objectSet=[
                PC.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)
                    ],
                )
            ],
            propSet=[PC.PropertySpec(type=kind, pathSet=paths)],
        )
        result = content.propertyCollector.RetrieveContents([spec])
    finally:
        view.DestroyView()
    return {obj.obj._moId: {prop.name: prop.val for prop in obj.propSet} for obj in result}


def wait_task(si: Any, task: Any, timeout: float = 10.0) -> None:
    """Wait through the PropertyCollector, reading only info.state/info.error (vcsim bug 2)."""
    pc = si.RetrieveContent().propertyCollector
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=task)],
        propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error"])],
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        props = {p.name: p.val for p in pc.RetrieveContents([spec])[0].propSet}
        if props["info.state"] == "success":
            return
        if props["info.state"] == "error":
            raise AssertionError(f"task failed: {props.get('info.error')}")
        time.sleep(0.02)
    raise AssertionError("task did not finish")


# --------------------------------------------------------------------------- build


def test_binary_builds_once_then_comes_from_the_cache() -> None:
    binary = build_vcsim()
    assert binary.is_file()
    assert os.access(binary, os.X_OK)
    assert default_cache_dir() in binary.parents
    began = time.monotonic()
    assert build_vcsim() == binary
    assert time.monotonic() - began < 2.0


def test_cache_dir_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "anyvirt" / "vcsim"


def test_missing_source_names_the_apt_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vcsim_testbed, "SYSTEM_GOPATH", tmp_path)
    with pytest.raises(VcsimBuildError, match="golang-go golang-github-vmware-govmomi-dev"):
        build_vcsim(tmp_path / "cache")


def test_unified_diff_applies_moved_hunks_and_refuses_wrong_context(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    target = tmp_path / "pkg" / "f.go"
    target.write_text("zero\none\ntwo\nthree\nfour\n")
    diff = (
        "A description line, ignored.\n"
        "--- a/pkg/f.go\n+++ b/pkg/f.go\n"
        "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"  # stated at line 1, really at line 2
    )
    apply_unified_diff(diff, tmp_path)
    assert target.read_text() == "zero\none\nTWO\nthree\nfour\n"
    with pytest.raises(ValueError, match="does not match"):
        apply_unified_diff(diff, tmp_path)  # "two" is gone now


# --------------------------------------------------------------------------- serving


def test_vcenter_login_verifies_tls_against_our_ca(vcsim_vcenter: Vcsim) -> None:
    sim = vcsim_vcenter
    assert sim.ca_file is not None
    si = connect(sim, ssl.create_default_context(cafile=str(sim.ca_file)))
    try:
        about = si.RetrieveContent().about
        assert about.apiType == "VirtualCenter"
    finally:
        Disconnect(si)
    assert sim.sdk_url == f"https://127.0.0.1:{sim.port}/sdk"
    assert sim.anyvirt_uri == f"vsphere://user@127.0.0.1:{sim.port}?verify=false"
    assert sim.anyvirt_uri_with_ca == f"vsphere://user@127.0.0.1:{sim.port}?ca={sim.ca_file}"
    assert sim.password not in sim.anyvirt_uri + sim.anyvirt_uri_with_ca


def test_default_trust_store_refuses_the_simulator(vcsim_vcenter: Vcsim) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(vcsim_vcenter, ssl.create_default_context())


def test_wrong_password_is_refused(vcsim_vcenter: Vcsim) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        connect(vcsim_vcenter, password="not-" + vcsim_vcenter.password)


def test_vm_count_from_one_property_collector_call(vcsim_vcenter: Vcsim) -> None:
    si = connect(vcsim_vcenter)
    try:
        vms = collect(si, vim.VirtualMachine, ["name", "runtime.powerState"])
        hosts = collect(si, vim.HostSystem, ["name"])
    finally:
        Disconnect(si)
    assert vcsim_vcenter.expected_vm_count == 4
    assert len(vms) == 4
    assert {props["name"] for props in vms.values()} >= {"DC0_C0_RP0_VM0", "DC0_H0_VM1"}
    assert sorted(props["name"] for props in hosts.values()) == [
        "DC0_C0_H0",
        "DC0_C0_H1",
        "DC0_C0_H2",
        "DC0_H0",
    ]


def test_esx_model(vcsim_esx: Vcsim) -> None:
    si = connect(vcsim_esx)
    try:
        assert si.RetrieveContent().about.apiType == "HostAgent"
        vms = collect(si, vim.VirtualMachine, ["name"])
    finally:
        Disconnect(si)
    assert len(vms) == vcsim_esx.expected_vm_count == 2
    assert vcsim_esx.anyvirt_uri == f"esxi://user@127.0.0.1:{vcsim_esx.port}?verify=false"


@pytest.mark.parametrize(
    ("fixture", "datacenter"), [("vcsim_vcenter", "DC0"), ("vcsim_esx", "ha-datacenter")]
)
def test_datastore_file_round_trip(fixture: str, datacenter: str, request: pytest.FixtureRequest) -> None:
    sim: Vcsim = request.getfixturevalue(fixture)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    si = connect(sim)
    cookie = si._stub.cookie  # the session, as a client of a real vCenter sends it
    query = f"dcPath={datacenter}&dsName=LocalDS_0"
    path = f"/folder/anyvirt-test/{fixture}/disk-flat.vmdk?{query}"
    try:
        put = http.client.HTTPSConnection(sim.host, sim.port, context=sim.ssl_context(), timeout=10)
        put.request("PUT", path, body=payload, headers={"Cookie": cookie})
        assert put.getresponse().status == 200
        put.close()
        get = http.client.HTTPSConnection(sim.host, sim.port, context=sim.ssl_context(), timeout=10)
        get.request("GET", path, headers={"Cookie": cookie})
        response = get.getresponse()
        assert response.status == 200
        assert response.read() == payload
        get.close()
    finally:
        Disconnect(si)
    # the file really lives in this simulator's own work directory
    assert sim.datastore_dir is not None
    stored = list(sim.datastore_dir.glob(f"govcsim-*/anyvirt-test/{fixture}/disk-flat.vmdk"))
    assert len(stored) == 1
    assert stored[0].read_bytes() == payload


def test_plain_http_mode(tmp_path: Path) -> None:
    with Vcsim(tls=False, vms=1, workdir=tmp_path) as sim:
        assert sim.ca_file is None
        assert sim.sdk_url.startswith("http://127.0.0.1:")
        assert sim.anyvirt_uri.startswith("vsphere+http://user@127.0.0.1:")
        connection = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
        connection.request("GET", "/sdk/vimServiceVersions.xml")
        assert b"urn:vim25" in connection.getresponse().read()
        connection.close()


def test_kill_makes_the_next_connection_fail_fast(tmp_path: Path) -> None:
    sim = Vcsim(hosts=1, standalone_hosts=0, vms=1, workdir=tmp_path).start()
    try:
        Disconnect(connect(sim))
        sim.kill()
        assert not sim.running
        began = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            connect(sim)
        assert time.monotonic() - began < 2.0
    finally:
        sim.stop()


def test_stop_removes_datastores_and_work_files(tmp_path: Path) -> None:
    sim = Vcsim(vms=1, workdir=tmp_path).start()
    datastore_dir = sim.datastore_dir
    assert datastore_dir is not None
    assert tmp_path in datastore_dir.parents
    assert list(datastore_dir.glob("govcsim-DC0-LocalDS_0-*"))  # the simulator's, under our dir
    pid = sim.pid
    sim.stop()
    assert not datastore_dir.exists()
    assert list(tmp_path.iterdir()) == []
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()


def test_patched_relocate_and_destroy_leave_no_stale_references(tmp_path: Path) -> None:
    """Our patch to govmomi 0.24.2: the VM moves between host and pool lists on Relocate,
    leaves its pool as a template, and nothing points at it once destroyed."""
    with Vcsim(hosts=2, standalone_hosts=0, pools=0, vms=2, workdir=tmp_path) as sim:
        si = connect(sim)
        try:
            vms = collect(si, vim.VirtualMachine, ["name", "runtime.host", "resourcePool"])
            hosts = collect(si, vim.HostSystem, ["name"])
            moved_id = next(i for i, p in vms.items() if p["name"] == "DC0_C0_RP0_VM0")
            source = vms[moved_id]["runtime.host"]
            target = next(h for h in hosts if h != source._moId)
            vm = vim.VirtualMachine(moved_id, si._stub)
            target_host = vim.HostSystem(target, si._stub)

            wait_task(si, vm.RelocateVM_Task(vim.vm.RelocateSpec(host=target_host)))
            host_vms = {h: [v._moId for v in p["vm"]] for h, p in collect(si, vim.HostSystem, ["vm"]).items()}
            assert moved_id in host_vms[target]
            assert moved_id not in host_vms[source._moId]

            wait_task(si, vm.PowerOffVM_Task())
            vm.MarkAsTemplate()
            pool_vms = [v._moId for p in collect(si, vim.ResourcePool, ["vm"]).values() for v in p["vm"]]
            assert moved_id not in pool_vms

            vm.MarkAsVirtualMachine(pool=vms[moved_id]["resourcePool"], host=target_host)
            pool_vms = [v._moId for p in collect(si, vim.ResourcePool, ["vm"]).values() for v in p["vm"]]
            assert pool_vms.count(moved_id) == 1

            wait_task(si, vm.Destroy_Task())
            # every list that named the VM is readable and no longer names it
            for kind in (vim.HostSystem, vim.ResourcePool, vim.Datastore):
                for props in collect(si, kind, ["vm"]).values():
                    assert moved_id not in [v._moId for v in props["vm"]]
            assert len(collect(si, vim.VirtualMachine, ["name"])) == sim.expected_vm_count - 1
        finally:
            Disconnect(si)


def memory_backed_dir() -> Path | None:
    """/dev/shm when usable: vcsim writes ~25,000 small datastore files for 5,000 VMs,
    which costs seconds of system time on a disk filesystem and nothing on tmpfs."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    return shm if shutil.disk_usage(shm).free > 256 * 1024 * 1024 else None


def test_measure_startup_of_5000_vms(tmp_path: Path) -> None:
    """Measured, not asserted beyond sanity: how long a 5,000-VM vCenter takes to come up."""
    with tempfile.TemporaryDirectory(prefix="anyvirt-vcsim-", dir=memory_backed_dir()) as workdir:
        sim = Vcsim(clusters=2, hosts=4, standalone_hosts=0, pools=0, vms=2500, workdir=Path(workdir))
        with sim.start(timeout=120):
            status = Path(f"/proc/{sim.pid}/status").read_text()
            rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            si = connect(sim)
            try:
                began = time.monotonic()
                count = len(collect(si, vim.VirtualMachine, ["name", "runtime.powerState"]))
                listing = time.monotonic() - began
            finally:
                Disconnect(si)
    print(
        f"\nvcsim with {count} VMs (datastores in {workdir}): started in {sim.startup_seconds:.2f} s, "
        f"RSS {int(rss) // 1024} MiB, listed name+powerState in {listing:.2f} s"
    )
    assert count == sim.expected_vm_count == 5000


def test_simulator_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no simulator behind (its stdin pipe closes)."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from anyvirt_vsphere.testbed.vcsim import Vcsim\n"
        "sim = Vcsim(vms=1, workdir=Path(sys.argv[1])).start()\n"
        "print(sim.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        simulator_pid = int(parent.stdout.readline())
        assert Path(f"/proc/{simulator_pid}").exists()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{simulator_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{simulator_pid}").exists()
    assert list(tmp_path.glob("*/datastores/govcsim-*")) == []  # it cleaned up as it went
