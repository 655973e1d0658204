"""The fake VBoxManage is held to the real 7.2: same VM, same commands, same formats.

One spec is created through anyvirt on the real VirtualBox and on the fake; their
outputs must have the same keys in the same order, each printed the same way
(quoted, bare number, bare word), and the same line formats for listings,
snapshots and errors. Values that are each VM's own (UUIDs, MACs, paths, times)
may differ.
"""

from __future__ import annotations

import re

import pytest
from anyvirt_virtualbox import listings, machinereadable
from anyvirt_virtualbox.errors import parse_error
from anyvirt_virtualbox.testbed import Home

from anyvirt.host import Host
from anyvirt.model import DiskSpec, Firmware, NicSpec, VMSpec

#: a description whose lines, were they read as settings, would be another VM's identity and state
HOSTILE_DESCRIPTION = (
    'x"\nUUID=00000000-0000-0000-0000-000000000000\nVMState="running"\nmemory=0\n'
    'CfgFile="/etc/shadow"\n"SATA-0-0"="/etc/passwd"\nzz=\\\\"\n\x7f\x9b\\'
)
SPECS = [
    VMSpec(name="twin", cpus=2, memory_mib=64, disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()]),
    VMSpec(name='tw"in ü', cpus=1, memory_mib=48, firmware=Firmware.EFI, description="two\nlines",
           disks=[DiskSpec(size_gib=0.0625)],
           nics=[NicSpec(network="internal:lab", model="virtio"), NicSpec(network="bridged:eth0")]),
    VMSpec(name="--help", cpus=1, memory_mib=48, description=HOSTILE_DESCRIPTION,
           disks=[DiskSpec(size_gib=0.0625)], nics=[NicSpec()]),
]
_UUIDS = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")


def shape(value: str) -> str:
    if value.startswith('"'):
        return "quoted"
    if re.fullmatch(r"-?\d+", value):
        return "number"
    return "bare"


def entries(home: Home, vm: str) -> list[tuple[str, str]]:
    """(key, shape) in order, from the raw text as printed (the parser is not the judge here)."""
    text = machinereadable.split_driver_warning(home.run("showvminfo", vm, "--machinereadable").stdout)[1]
    out = []
    for line in text.splitlines():
        m = re.match(r'^("(?:[^"\\]|\\.)*"|[^="]+)=(.*)$', line)
        if m:
            out.append((m[1], shape(m[2])))
        elif line.strip() and not line[:1].isalnum():
            out.append((line, "loose"))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=["plain", "efi-nics-description", "hostile"])
def test_showvminfo_has_the_real_keys_in_the_real_order(
    spec: VMSpec, real_home: Home, real_host: Host, fake_home: Home, fake_host: Host
) -> None:
    real_vm = real_host.vms.create(spec)
    fake_vm = fake_host.vms.create(spec)
    real, fake = entries(real_home, real_vm.id), entries(fake_home, fake_vm.id)
    assert len(real) > 100 and ("nic1", "quoted") in real
    assert fake == real
    r = machinereadable.parse(real_home.run("showvminfo", real_vm.id, "--machinereadable").stdout)
    f = machinereadable.parse(fake_home.run("showvminfo", fake_vm.id, "--machinereadable").stdout)
    own = {"UUID", "hardwareuuid", "CfgFile", "SnapFldr", "LogFldr", "NvramFile", "VMStateChangeTime",
           "rec_screen_dest_filename"}
    differing = {k for k in r.values if r.values[k] != f.values.get(k)}
    assert differing <= own | {k for k in r.values if k.startswith(("macaddress", '"SATA-'))} | {
        k for k in r.values if "-ImageUUID-" in k or k.startswith("SATA-")}
    assert r.get("name") == f.get("name") == spec.name
    assert r.get("description") == f.get("description") == spec.description


def test_snapshots_lists_and_errors_match(
    real_home: Home, real_host: Host, fake_home: Home, fake_host: Host
) -> None:
    vms = {}
    for home, host in ((real_home, real_host), (fake_home, fake_host)):
        vm = host.vms.create(SPECS[0])
        s1 = vm.snapshots.create("s1", description='a "quoted" one')
        vm.snapshots.create("s2")
        s1.revert()
        vm.snapshots.create("s3")
        vms[home] = vm.id

    def snapshot_shape(home: Home) -> list[str]:
        text = home.run("snapshot", vms[home], "list", "--machinereadable").stdout
        return [re.sub(r'="[^\n]*"$', "=…", line) for line in text.splitlines() if "=" in line]

    assert snapshot_shape(fake_home) == snapshot_shape(real_home)
    # `list vms` and `list hdds`: the same line and record layouts
    for home in (real_home, fake_home):
        (listed,) = listings.list_vms(home.run("list", "vms").stdout)
        assert (listed.name, listed.uuid) == ("twin", vms[home])
    real_keys = [list(r) for r in listings.records(real_home.run("list", "hdds").stdout)]
    fake_keys = [list(r) for r in listings.records(fake_home.run("list", "hdds").stdout)]
    assert real_keys[0] == fake_keys[0]
    oses = {listings.host_facts(h.run("list", "hostinfo").stdout).os for h in (real_home, fake_home)}
    assert oses == {"Linux"}
    # errors: the same lines and codes for a missing VM and a stopped VM's pause
    for args in (["showvminfo", "nosuch", "--machinereadable"], ["controlvm", "nosuch", "pause"]):
        real_err = parse_error(real_home.run(*args, check=False).stderr)
        fake_err = parse_error(fake_home.run(*args, check=False).stderr)
        assert real_err is not None and fake_err is not None
        assert (fake_err.message, fake_err.code) == (real_err.message, real_err.code)
    real_p = real_home.run("controlvm", vms[real_home], "pause", check=False)
    fake_p = fake_home.run("controlvm", vms[fake_home], "pause", check=False)
    assert (fake_p.returncode, fake_p.stderr.replace(vms[fake_home], "VM")) == (
        real_p.returncode, real_p.stderr.replace(vms[real_home], "VM"))


def test_hostile_names_and_snapshot_values_print_alike(
    real_home: Home, real_host: Host, fake_home: Home, fake_host: Host
) -> None:
    """Snapshot values are printed raw by both, VM names raw in ``list vms``, the folder
    a VM name makes is the same, and a snapshot name may start with a dash."""
    texts = {}
    for home, host in ((real_home, real_host), (fake_home, fake_host)):
        vm = host.vms.create(SPECS[2])
        vm.snapshots.create("-v", description=HOSTILE_DESCRIPTION)
        vm.snapshots.create('s "2"', description='SnapshotUUID-1="x"\nGuestMemoryBalloon=0')
        home.run("snapshot", vm.id, "take", "--version", "--description", "-h")
        clone = vm.clone("team/web")
        folder = clone.info().extra["config_file"]
        snaps = machinereadable.split_driver_warning(
            home.run("snapshot", vm.id, "list", "--machinereadable").stdout)[1]
        vms = machinereadable.split_driver_warning(home.run("list", "vms").stdout)[1]
        texts[home] = (_UUIDS.sub("U", snaps), _UUIDS.sub("U", vms),
                       folder.removeprefix(str(home.machine_folder)), [s.name for s in vm.snapshots.list()])
    assert texts[fake_home] == texts[real_home]
    assert texts[real_home][3] == ["-v", 's "2"', "--version"]
