"""Deployment on the real VirtualBox 7.2: seed ISOs on DVD drives, templates, guest addresses.

The identity primitives are called through ``host.driver`` (the SPI) until the gate wires
them into VMSpec/clone and the handles; templates go through the public API. What they did
is read back with the testbed's own ``VBoxManage`` and the ISO image itself. No guest runs
here (no ``vboxdrv``): the guest properties the Additions would write are written with
``VBoxManage guestproperty set`` (the real 7.2 stores and enumerates them), which stands in
for the Additions.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest
from anyvirt_virtualbox import machinereadable
from anyvirt_virtualbox.driver import VirtualBoxDriver
from anyvirt_virtualbox.guest import SEED_FILE, reported_addresses
from anyvirt_virtualbox.testbed import Home
from virtualbox_support import show

from anyvirt.addresses import ReportedAddress, select_addresses
from anyvirt.deployment import Identity, Static, User, compile_nocloud
from anyvirt.errors import InvalidState
from anyvirt.host import Host
from anyvirt.model import Capability, NicSpec
from anyvirt.tasks import Job
from anyvirt.testing.plugin import small_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp6nXyqW0x+Yk8l3u6mB8m3oI1nJ6Vq0sN2Xk7cQp1e ops@laptop"
IDENTITY = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)],
                    network=[Static(["192.0.2.10/24"], gateway="192.0.2.1")],
                    user_data="#cloud-config\npackages: [nginx]\n")

# ``guestproperty enumerate`` of the real 7.2 (captured from the testbed's VBoxManage), with
# a value holding quotes, "=" and "@" as a guest may write
ENUMERATE_7_2 = (
    "/VirtualBox/GuestInfo/Net/0/MAC        = '080027AABBCC'          @ 2026-12-06T21:15:46.550Z\n"
    "/VirtualBox/GuestInfo/Net/0/V4/IP      = '10.0.2.15'             @ 2026-12-06T21:15:46.415Z\n"
    "/VirtualBox/GuestInfo/Net/0/V4/Netmask = '255.255.255.0'         @ 2026-12-06T21:15:46.666Z\n"
    "/VirtualBox/GuestInfo/Net/Count        = '1'                     @ 2026-12-06T21:15:46.809Z\n"
    "/x/quote                               = 'it's = '@ x' (RDONLY)' @ 2026-12-06T21:15:46.927Z\n"
)


def _driver(host: Host) -> VirtualBoxDriver:
    driver = host.driver
    assert isinstance(driver, VirtualBoxDriver)
    return driver


def _dvds(home: Home, vm: str) -> dict[str, str]:
    """Slot -> image of the VM's DVD drives, as the real VBoxManage shows them."""
    info = show(home, vm)
    return {key: value for key, value in info.values.items()
            if value.endswith(".iso") and not key.startswith(("CfgFile", "SnapFldr", "LogFldr"))}


def _iso_files(path: str) -> tuple[str, dict[str, bytes]]:
    """The volume id and files of an ISO, read with pycdlib (Rock Ridge names)."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        files = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        return iso.pvd.volume_identifier.decode().strip(), files
    finally:
        iso.close()


def test_capabilities(real_host: Host) -> None:
    caps = real_host.capabilities
    assert {Capability.IDENTITY, Capability.IDENTITY_USER_DATA, Capability.TEMPLATES,
            Capability.TEMPLATE_TO_VM, Capability.LINKED_CLONE_OF_TEMPLATE} <= caps
    # the testbed has no vboxdrv: no guest runs, so none reports an address
    assert Capability.GUEST_ADDRESSES not in caps


def test_the_seed_is_an_iso_on_a_dvd_drive_read_back_file_by_file(real_home: Home, real_host: Host) -> None:
    driver = _driver(real_host)
    vm = real_host.vms.create(small_spec("seeded"))
    try:
        assert driver.read_identity(vm.id) is None
        resolved = IDENTITY.resolve("seeded", "iid-seeded")
        driver.apply_identity(vm.id, resolved, Job("identity", 120))
        folder = Path(show(real_home, vm.id).get("CfgFile")).parent
        seed = folder / SEED_FILE
        assert list(_dvds(real_home, vm.id).values()) == [str(seed)]
        media = real_home.run("list", "dvds").stdout
        assert str(seed) in media
        label, files = _iso_files(str(seed))
        macs = [nic.mac for nic in vm.info().nics if nic.mac]
        assert label == "cidata"
        assert files == compile_nocloud(resolved, macs).files()
        assert b"local-hostname: seeded" in files["meta-data"] and KEY.encode() in files["user-data"]
        assert driver.read_identity(vm.id) == {k: v.decode() for k, v in files.items()}
        if shutil.which("xorriso"):  # and as another ISO reader sees it
            done = subprocess.run(["xorriso", "-indev", str(seed), "-pvd_info"], capture_output=True,
                                  text=True, check=True)
            assert "cidata" in done.stdout + done.stderr
    finally:
        vm.delete()
    assert not seed.exists() and not folder.exists()  # the seed went with the VM
    assert str(seed) not in real_home.run("list", "dvds").stdout


def test_templates_clones_and_their_own_seeds(real_home: Home, real_host: Host) -> None:
    driver = _driver(real_host)
    source = real_host.vms.create(small_spec("tmpl"))
    clones = []
    try:
        driver.apply_identity(source.id, Identity().resolve("tmpl", "iid-tmpl"), Job("identity", 120))
        source_seed = Path(show(real_home, source.id).get("CfgFile")).parent / SEED_FILE
        source_bytes = source_seed.read_bytes()
        source_dvds = _dvds(real_home, source.id)

        source.mark_template()
        assert "Value: 1" in real_home.run("getextradata", source.id, "anyvirt/template").stdout
        listed = {vm.name: vm for vm in real_host.vms.list()}
        assert listed["tmpl"].template  # read from the .vbox file
        with pytest.raises(InvalidState, match="template"):
            source.reconfigure(cpus=2)  # (start: proven on the fake, where a VM can run)

        for name, linked in (("full-1", False), ("linked-1", True)):
            clone = source.clone(name, linked=linked)
            clones.append(clone)
            assert not clone.refresh().template  # a clone of a template is a VM
            assert _dvds(real_home, clone.id) == source_dvds  # clonevm keeps the source's seed
            resolved = Identity().resolve(name, f"iid-{name}")
            driver.apply_identity(clone.id, resolved, Job("identity", 120))
            own = Path(show(real_home, clone.id).get("CfgFile")).parent / SEED_FILE
            assert list(_dvds(real_home, clone.id).values()) == [str(own)]  # the same slot, its own
            held = driver.read_identity(clone.id)
            assert held is not None and f"instance-id: iid-{name}" in held["meta-data"]
            assert source_seed.read_bytes() == source_bytes  # the template's seed is untouched
            assert _dvds(real_home, source.id) == source_dvds

        bare = source.clone("bare-1")  # no identity of its own: it reads the template's seed
        clones.append(bare)
        assert _dvds(real_home, bare.id) == source_dvds
        for clone in clones:
            clone.delete()
        clones.clear()
        assert source_seed.read_bytes() == source_bytes  # deleting clones left the template's seed
        assert _dvds(real_home, source.id) == source_dvds
        template = real_host.vms.get("tmpl")
        template.convert_to_vm()
        assert not template.refresh().template
        assert "No value set!" in real_home.run("getextradata", source.id, "anyvirt/template").stdout
    finally:
        for clone in clones:
            clone.delete()
        source.delete()


def test_guest_addresses_from_the_guest_properties(real_home: Home, real_host: Host) -> None:
    driver = _driver(real_host)
    vm = real_host.vms.create(small_spec("props", nics=[NicSpec(mac="08:00:27:aa:bb:cc"), NicSpec()]))
    try:
        assert driver.guest_addresses(vm.id) == []
        assert driver.guest_reports_up(vm.id) is False  # not running
        # stand-in for the Guest Additions: the properties they write, set on the real 7.2
        for name, value in (("/VirtualBox/GuestInfo/Net/0/MAC", "080027AABBCC"),
                            ("/VirtualBox/GuestInfo/Net/0/V4/IP", "192.0.2.10"),
                            ("/VirtualBox/GuestInfo/Net/0/V4/Netmask", "255.255.255.0"),
                            ("/VirtualBox/GuestInfo/Net/0/Status", "Up"),
                            ("/VirtualBox/GuestInfo/Net/1/MAC", "0242AC110001"),  # docker0 in the guest
                            ("/VirtualBox/GuestInfo/Net/1/V4/IP", "172.17.0.1"),
                            ("/VirtualBox/GuestInfo/Net/1/V4/Netmask", "255.255.0.0"),
                            ("/VirtualBox/GuestInfo/Net/Count", "2"),
                            ("/VirtualBox/GuestInfo/OS/Product", "Linux = '/VirtualBox/x' @")):
            real_home.run("guestproperty", "set", vm.id, name, value)
        reported = driver.guest_addresses(vm.id)
        assert reported == [ReportedAddress("080027AABBCC", "192.0.2.10", 24, "agent"),
                            ReportedAddress("0242AC110001", "172.17.0.1", 16, "agent")]
        kept = select_addresses(reported, [nic.mac or "" for nic in vm.info().nics])
        assert [(a.mac, str(a.ip), a.prefix) for a in kept] == [("08:00:27:aa:bb:cc", "192.0.2.10", 24)]
    finally:
        vm.delete()


def test_enumerate_parsing_of_the_7_2_format() -> None:
    assert reported_addresses(ENUMERATE_7_2) == [ReportedAddress("080027AABBCC", "10.0.2.15", 24, "agent")]
    assert reported_addresses("") == []
    # a NIC the guest has not given an address yet, and a netmask that is none
    assert reported_addresses("/VirtualBox/GuestInfo/Net/0/MAC = '080027000001'\n"
                              "/VirtualBox/GuestInfo/Net/1/MAC = '080027000002'\n"
                              "/VirtualBox/GuestInfo/Net/1/V4/IP = '10.0.0.5'\n"
                              "/VirtualBox/GuestInfo/Net/1/V4/Netmask = 'bogus'\n") == [
        ReportedAddress("080027000002", "10.0.0.5", None, "agent")]


def test_the_fakes_guestproperty_enumerate_matches_the_real_one(real_home: Home, fake_home: Home) -> None:
    values = (("/VirtualBox/GuestInfo/Net/0/V4/IP", "10.0.2.15"),
              ("/VirtualBox/GuestInfo/Net/0/MAC", "080027AABBCC"),
              ("/x/quote", "it's = '@ x' (RDONLY)"))
    outputs = []
    for home in (real_home, fake_home):
        home.run("createvm", "--name", "gp", "--register")
        for name, value in values:
            home.run("guestproperty", "set", "gp", name, value)
        plain = home.run("guestproperty", "enumerate", "gp", "--no-timestamp", "--no-flags").stdout
        filtered = home.run("guestproperty", "enumerate", "gp", "--no-timestamp", "--no-flags",
                            "/VirtualBox/GuestInfo/Net/*").stdout
        stamped = home.run("guestproperty", "enumerate", "gp").stdout
        outputs.append((machinereadable.split_driver_warning(plain)[1],
                        machinereadable.split_driver_warning(filtered)[1],
                        [line.rsplit(" @ ", 1)[0] for line in
                         machinereadable.split_driver_warning(stamped)[1].splitlines()]))
        home.run("unregistervm", "gp", "--delete")
    assert outputs[0] == outputs[1]


def test_the_gate_refuses_to_start_a_template(fake_host: Host) -> None:
    """Starting needs a guest that can run: the fake VBoxManage, which keeps the mark in the
    same extra data as 7.2 (its .vbox file is what the listing reads)."""
    vm = fake_host.vms.create(small_spec("fake-tmpl"))
    try:
        vm.mark_template()
        assert {v.name: v for v in fake_host.vms.list()}["fake-tmpl"].template
        with pytest.raises(InvalidState, match="template"):
            vm.start()
        vm.convert_to_vm()
        vm.start()
        vm.stop(force=True)
    finally:
        vm.delete()


def test_deleting_a_source_keeps_a_seed_another_vm_reads(real_home: Home, real_host: Host) -> None:
    driver = _driver(real_host)
    source = real_host.vms.create(small_spec("src"))
    driver.apply_identity(source.id, Identity().resolve("src", "iid-src"), Job("identity", 120))
    seed = Path(show(real_home, source.id).get("CfgFile")).parent / SEED_FILE
    bare = source.clone("bare-2")  # reads the source's seed
    try:
        source.delete()
        assert seed.exists() and list(_dvds(real_home, bare.id).values()) == [str(seed)]
    finally:
        bare.delete()
