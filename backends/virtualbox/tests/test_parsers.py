"""The parsers against every captured VBoxManage output, 4.3 to 7.2, asserting the values.

``captures/`` holds real outputs of the project's VirtualBox 7.2 testbed and the
permissively licensed ones published by other projects (captures/SOURCES.md).
The shared collection's other files (AGPL/GPL/unlicensed sources) are read from
``$ANYVIRT_VIRTUALBOX_CAPTURES`` where it exists, and every variation they show
is also reproduced below in snippets of our own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from anyvirt_virtualbox import listings, machinereadable, vminfo
from anyvirt_virtualbox.errors import error_class, parse_error, to_anyvirt
from anyvirt_virtualbox.machines import disks
from anyvirt_virtualbox.snapshot_tree import parse_snapshot_list, tree_from

from anyvirt.errors import AlreadyExists, InvalidState, NotFound, TaskFailed
from anyvirt.model import MIB, Firmware, PowerState

CAPTURES = Path(__file__).with_name("captures")
SHARED = Path(os.environ.get("ANYVIRT_VIRTUALBOX_CAPTURES", "/work/shared/fixtures/virtualbox"))


def read(name: str) -> str:
    return (CAPTURES / name).read_text()


def shared(name: str) -> str:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(
            f"{name} is not vendored (its licence does not allow it) and "
            f"{SHARED} is absent; its variations are covered by the snippets below"
        )
    return path.read_text()


def info_of(text: str, raw_paths: bool = False) -> tuple[machinereadable.Parsed, list[vminfo.Attachment]]:
    parsed = machinereadable.parse(text, raw_paths=raw_paths)
    return parsed, [a for a in vminfo.attachments(parsed) if not a.dvd]


# ---------------------------------------------------------------- real 7.2


def test_real_7_2_vm_with_everything() -> None:
    text = read("showvminfo-machinereadable--anyvirt-7.2.22.txt")
    assert text.startswith("WARNING: The character device /dev/vboxdrv")
    parsed, hdds = info_of(text)
    assert "/dev/vboxdrv" in parsed.warnings[0]
    info = vminfo.vm_info(parsed, "node1", parsed.get("UUID").lower(), None, None, disks(parsed, {}))
    assert info.name == 'web "1" $(id); ü'
    assert info.id == "5b0a3c1e-2f4d-4e6a-9b8c-7d1e2f3a4b5c"
    assert (info.state, info.raw_state, info.cpus, info.memory_mib) == (PowerState.STOPPED, "poweroff", 2, 96)
    assert info.firmware is Firmware.EFI
    assert info.description == 'first line\nsecond "quoted" \\ line'
    assert [(a.id, a.bus) for a in hdds] == [("SATA-0-0", "sata")]
    # with snapshots the attached image is the current differencing one
    assert hdds[0].path.startswith("/tmp/cap72/machines/web _1_ _(id)_ ü/Snapshots/{")
    dvds = [a for a in vminfo.attachments(parsed) if a.dvd]
    assert [(a.id, a.path) for a in dvds] == [("IDE-1-0", "emptydrive")]
    assert [(n.id, n.network, n.mac, n.model) for n in info.nics] == [
        ("nic1", "nat", "08:00:27:aa:bb:cc", "pcnet"),
        ("nic2", "internal:lab net", info.nics[1].mac, "pcnet"),
        ("nic3", "bridged:eth0", info.nics[2].mac, "pcnet"),
        ("nic4", "hostonly:vboxnet0", info.nics[3].mac, "virtio"),
    ]
    assert parsed.get("platformArchitecture") == "x86"
    assert " rec_screen0" in parsed.loose_lines
    tree = tree_from(parsed)
    assert [n.name for n in tree.nodes] == ["base", "s2", "s3", "s4"]
    assert tree.by_uuid()[tree.current].name == "s3"
    assert tree.nodes[0].description == 'the "first" one'  # printed raw by 7.2
    # after the snapshot block, plain keys resume
    assert parsed.get("GuestMemoryBalloon") == "0"


def test_real_7_2_snapshot_list_with_current_in_the_middle() -> None:
    tree = parse_snapshot_list(read("snapshot-list-machinereadable--anyvirt-7.2.22.txt"))
    by_name = {n.name: n for n in tree.nodes}
    assert set(by_name) == {"base", "s2", "s3", "s4"}
    assert by_name["base"].parent is None
    assert by_name["s2"].parent == by_name["base"].uuid
    assert by_name["s3"].parent == by_name["base"].uuid
    assert by_name["s4"].parent == by_name["s3"].uuid
    assert tree.current == by_name["s3"].uuid
    assert by_name["base"].description == 'the "first" one'


def test_real_7_2_no_snapshots() -> None:
    assert parse_snapshot_list(read("snapshot-list-empty--anyvirt-7.2.22.txt")).nodes == ()
    parsed = machinereadable.parse(read("showvminfo-machinereadable--anyvirt-7.2.22-nosnapshots.txt"))
    assert tree_from(parsed).nodes == ()
    assert parsed.get("description") == 'first line\nsecond "quoted" \\ line'


def test_real_7_2_lists() -> None:
    vms = listings.list_vms(read("list-vms--anyvirt-7.2.22.txt"))
    assert vms == [listings.ListedVM(name='web "1" $(id); ü', uuid="5b0a3c1e-2f4d-4e6a-9b8c-7d1e2f3a4b5c")]
    assert listings.list_vms(read("list-runningvms--anyvirt-7.2.22.txt")) == []
    host = listings.host_facts(read("list-hostinfo--anyvirt-7.2.22.txt"))
    assert host.cpus >= 1 and host.memory_mib > 1000 and host.free_memory_mib
    assert host.os == "Linux"
    media = listings.media(read("list-hdds--anyvirt-7.2.22.txt"))
    base = [m for m in media if m.location == "/tmp/cap72/machines/disk0.vdi"]
    assert len(base) == 1 and base[0].parent is None and base[0].capacity_mib == 64
    assert base[0].format == "VDI"
    diffs = [m for m in media if m.parent is not None]
    assert diffs and all("/Snapshots/{" in m.location for m in diffs)
    assert listings.host_only_interfaces(read("list-hostonlyifs--anyvirt-7.2.22.txt")) == []
    version = listings.parse_version(read("version--anyvirt-7.2.22.txt"))
    assert (version.major, version.minor, version.patch, version.build, version.revision) == (
        7,
        2,
        22,
        "Debian",
        175245,
    )


@pytest.mark.parametrize(
    ("name", "cls", "code"),
    [
        ("error-showvminfo-not-found--anyvirt-7.2.22.txt", NotFound, "VBOX_E_OBJECT_NOT_FOUND"),
        ("error-snapshot-not-found--anyvirt-7.2.22.txt", NotFound, "VBOX_E_OBJECT_NOT_FOUND"),
        ("error-createvm-duplicate--anyvirt-7.2.22.txt", AlreadyExists, "VBOX_E_FILE_ERROR"),
        (
            "error-snapshot-delete-two-children--anyvirt-7.2.22.txt",
            InvalidState,
            "VBOX_E_INVALID_OBJECT_STATE",
        ),
        ("error-controlvm-not-running--anyvirt-7.2.22.txt", InvalidState, ""),
        ("error-startvm-no-kernel-driver--anyvirt-7.2.22.txt", TaskFailed, "NS_ERROR_FAILURE"),
        (
            "error-vm-not-found--myspaghetti-macos-virtualbox-issue9-windows.txt",
            NotFound,
            "VBOX_E_OBJECT_NOT_FOUND",
        ),
    ],
)
def test_errors(name: str, cls: type[Exception], code: str) -> None:
    error = parse_error(read(name))
    assert error is not None
    assert error.code == code
    assert error_class(error) is cls
    exc = to_anyvirt(error, "doing it")
    assert isinstance(exc, cls) and str(exc).startswith("doing it: ")


def test_error_details_and_context() -> None:
    error = parse_error(read("error-showvminfo-not-found--anyvirt-7.2.22.txt"))
    assert error is not None
    assert error.message == "Could not find a registered machine named 'nosuch'"
    assert error.hex_code == "0x80bb0001"
    assert "VBoxManageInfo.cpp" in error.context
    assert parse_error("0%...10%...100%\n") is None


def test_session_lock_is_recognised() -> None:
    locked = parse_error(
        "VBoxManage: error: The machine 'x' is already locked for a session (or being "
        "unlocked)\nVBoxManage: error: Details: code VBOX_E_INVALID_OBJECT_STATE "
        "(0x80bb0007), component MachineWrap, interface IMachine, callee nsISupports\n"
    )
    assert locked is not None and locked.locked and error_class(locked) is InvalidState
    other = parse_error(read("error-snapshot-delete-two-children--anyvirt-7.2.22.txt"))
    assert other is not None and not other.locked


# ---------------------------------------------------------------- published captures (vendored)


def test_go_virtualbox_5_2_saved_vm() -> None:
    parsed, hdds = info_of(read("showvminfo-machinereadable--go-virtualbox-5.2.txt"))
    s = vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None)
    assert (s.name, s.id, s.state, s.raw_state, s.cpus, s.memory_mib) == (
        "go-virtualbox",
        "37f5d336-bf07-48dd-947c-37e6a56420a7",
        PowerState.SUSPENDED,
        "saved",
        1,
        1024,
    )
    assert [(a.id, a.bus, a.image_uuid) for a in hdds] == [
        ("SATA Controller-0-0", "sata", "32583b48-693e-45d4-882f-e9196d4f43c6")
    ]
    assert hdds[0].path == "/Users/fix/VirtualBox VMs/go-virtualbox/ubuntu-16.04-amd64-disk001.vmdk"
    assert [(n.network, n.mac, n.model) for n in vminfo.nics(parsed)] == [
        ("nat", "08:00:27:ee:1d:f7", "e1000")
    ]
    assert parsed.get("Forwarding(0)") == "ssh,tcp,127.0.0.1,2222,,22"
    assert parsed.get("vrdeproperty[VideoChannel/Enabled]") == "<not set>"
    assert parsed.get("vrdeproperty[TCP/Ports]") == "5914"
    assert tree_from(parsed).nodes == ()


def test_chef_ohai_6_0_with_a_snapshot() -> None:
    parsed, hdds = info_of(read("showvminfo-machinereadable--chef-ohai-6.0.txt"))
    s = vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None)
    assert (s.name, s.state, s.cpus, s.memory_mib) == (
        "ubuntu-18.04-amd64_1549746024485_35372",
        PowerState.STOPPED,
        1,
        1024,
    )
    assert [a.image_uuid for a in hdds] == ["1c182745-4b09-41a1-a147-d3ced46f72f6"]
    tree = tree_from(parsed)
    assert [(n.name, n.uuid, n.parent) for n in tree.nodes] == [
        ("base", "085cbbec-70cd-4864-9208-5d938dcabb71", None)
    ]
    assert tree.current == "085cbbec-70cd-4864-9208-5d938dcabb71"
    media = {m.uuid: m for m in listings.media(read("list-hdds--chef-ohai-6.0.txt"))}
    info = vminfo.vm_info(parsed, "n", parsed.get("UUID").lower(), None, None, disks(parsed, media))
    (disk,) = info.disks
    assert (disk.size_bytes, disk.format) == (65536 * MIB, "vmdk")
    assert media["1c182745-4b09-41a1-a147-d3ced46f72f6"].parent == "ebb6dca0-879f-480b-a50e-9efe330bd021"
    assert disk.backing is None  # its base lies in its own folder: its own snapshot chain


def test_digabi_6_0_efi_bridged_virtio() -> None:
    parsed, hdds = info_of(read("showvminfo-machinereadable--digabi-naksu-6.0.txt"))
    info = vminfo.vm_info(parsed, "n", parsed.get("UUID").lower(), None, None, disks(parsed, {}))
    assert (info.name, info.cpus, info.memory_mib, info.firmware) == (
        "SERVER1919C v114",
        7,
        11827,
        Firmware.EFI,
    )
    assert info.description == "digabi/ktp-qa"
    assert [(n.network, n.model) for n in info.nics] == [("bridged:em1", "virtio")]
    assert [a.id for a in hdds] == ["SATA Controller-0-0"]
    assert parsed.get("videocapopts", "missing") == ""  # an unquoted empty value
    assert parsed.get("videocapres") == "1024x768"


def test_lists_and_records_of_5_x_and_6_0() -> None:
    assert [v.name for v in listings.list_vms(read("list-vms--go-virtualbox.txt"))] == [
        "Ubuntu",
        "go-virtualbox",
    ]
    assert (
        listings.list_vms(read("list-vms--chef-ohai-6.0.txt"))[0].uuid
        == "6294f16b-4f05-4430-afb9-773bdb237aec"
    )
    ifs = listings.host_only_interfaces(read("list-hostonlyifs--chef-ohai-6.0.txt"))
    assert [(i.name, i.ip, i.status) for i in ifs] == [
        ("vboxnet0", "192.168.33.1", "Down"),
        ("vboxnet1", "192.168.19.1", "Up"),
    ]
    (one,) = listings.host_only_interfaces(read("list-hostonlyifs--go-virtualbox-5.2.txt"))
    assert (one.name, one.ip, one.mac) == ("vboxnet0", "192.168.56.1", "0a:00:27:00:00:00")
    media = listings.media(read("list-hdds--chef-ohai-6.0.txt"))
    assert [(m.uuid[:8], m.parent and m.parent[:8], m.capacity_mib) for m in media] == [
        ("ebb6dca0", None, 65536),
        ("1c182745", "ebb6dca0", 65536),
    ]


def test_packer_snapshot_tree() -> None:
    tree = parse_snapshot_list(read("snapshot-list-machinereadable--packer-plugin-virtualbox.txt"))
    names = {n.uuid: n.name for n in tree.nodes}
    edges = {(names[n.parent] if n.parent else None, n.name, n.path) for n in tree.nodes}
    assert ("Snapshot 2", "Snapshot-Export", "-1-1-3") in edges
    assert (None, "Imported", "") in edges
    assert ("Snapshot 5", "Snapshot 2", "-2-1") in edges
    assert ("Snapshot 7", "Snapshot 9", "-3-2") in edges  # the last line has no newline
    assert len(tree.nodes) == 11
    assert names[tree.current or ""] == "Snapshot-Export"


def test_issue_thread_snapshot_lists() -> None:
    tree = parse_snapshot_list(
        read("snapshot-list-machinereadable--node-virtualbox-issue50-5.1.22-windows.txt")
    )
    assert [(n.name, n.parent) for n in tree.nodes] == [("Istantanea 1", None)]
    assert tree.current == "c3dee892-28f7-475a-ba8a-bac2b98cfac8"
    assert (
        parse_snapshot_list(
            read("snapshot-list-empty--dergachev-vagrant-vbox-snapshot-issue17-4.3.4.txt")
        ).nodes
        == ()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.1.26_Ubuntur145957\n", (6, 1, 26, "Ubuntu", 145957)),
        ("7.0.10r158379\n", (7, 0, 10, "", 158379)),
        ("5.2.44_Debianr139111", (5, 2, 44, "Debian", 139111)),
        (
            "WARNING: The vboxdrv kernel module is not loaded. Either there is no module\n"
            "         available for the current kernel.\n\n"
            "         You will not be able to start VMs until this problem is fixed.\n7.1.4r165100\n",
            (7, 1, 4, "", 165100),
        ),
    ],
)
def test_versions(text: str, expected: tuple[object, ...]) -> None:
    v = listings.parse_version(text)
    assert (v.major, v.minor, v.patch, v.build, v.revision) == expected
    assert v.at_least(5) and not v.at_least(8)


# ---------------------------------------------------------------- the variations of the other captures


def test_windows_paths_escaped_and_raw() -> None:
    # 6.0 on Windows escapes some fields and prints others raw, in one output
    text = (
        'CfgFile="C:\\\\Users\\\\me\\\\VirtualBox VMs\\\\x\\\\x.vbox"\n'
        'storagecontrollername0="SATA"\nstoragecontrollertype0="IntelAhci"\n'
        'storagecontrollername1="IDE"\nstoragecontrollertype1="PIIX4"\n'
        '"IDE-1-0"="C:\\Program Files\\Oracle\\VirtualBox\\VBoxGuestAdditions.iso"\n'
        '"IDE-IsEjected"="off"\n'
        '"SATA-0-0"="C:\\Virtual Machines\\x.vdi"\n'
        'videocapfile="C:\\Users\\me\\x.webm"\nlast="D:\\"\nnext="1"\n'
    )
    parsed, hdds = info_of(text, raw_paths=True)
    assert parsed.get("CfgFile") == "C:\\Users\\me\\VirtualBox VMs\\x\\x.vbox"
    assert [a.path for a in hdds] == ["C:\\Virtual Machines\\x.vdi"]
    assert [a.path for a in vminfo.attachments(parsed) if a.dvd] == [
        "C:\\Program Files\\Oracle\\VirtualBox\\VBoxGuestAdditions.iso"
    ]
    assert parsed.get("videocapfile") == "C:\\Users\\me\\x.webm"
    assert parsed.get("last") == "D:\\"  # a raw path ending in a backslash
    assert parsed.get("next") == "1"


def test_running_vm_keys_with_spaces_and_trailers() -> None:
    text = (
        'VMState="running"\nSessionName="GUI/Qt"\nVideoMode="1288,790,32"@0,0 1\n'
        "GuestAdditionsFacility_VirtualBox Base Driver=50,1788999291495\n"
        "GuestAdditionsFacility_Seamless Mode=0,1458910695598\n"
        'BIOS NVRAM File="/home/u/x.nvram"\nEncryption:     disabled\n rec_screen0\n'
        'GuestAdditionsVersion="6.0.0 r127566"\n'
    )
    parsed = machinereadable.parse(text)
    assert vminfo.state_of(parsed.get("VMState")) is PowerState.RUNNING
    assert parsed.get("VideoMode") == "1288,790,32@0,0 1"
    assert parsed.get("GuestAdditionsFacility_VirtualBox Base Driver") == "50,1788999291495"
    assert parsed.get("GuestAdditionsFacility_Seamless Mode") == "0,1458910695598"
    assert parsed.get("BIOS NVRAM File") == "/home/u/x.nvram"
    assert parsed.loose_lines == ("Encryption:     disabled", " rec_screen0")
    assert parsed.get("GuestAdditionsVersion") == "6.0.0 r127566"


def test_internal_and_host_only_networks_and_old_eject_key() -> None:
    text = (
        'storagecontrollername0="IDE"\nstoragecontrollertype0="PIIX4"\n"IDE-1-0"="emptydrive"\n'
        '"IDE-IsEjected"="off"\n"IDE-1-1"="none"\n'
        'intnet1="Internet"\nmacaddress1="080027CA0E5D"\nnic1="intnet"\nnictype1="Am79C973"\n'
        'hostonlyadapter2="VirtualBox Host-Only Ethernet Adapter"\nmacaddress2="080027AE1F98"\n'
        'nic2="hostonly"\nnictype2="82540EM"\nnic3="none"\n'
    )
    parsed, hdds = info_of(text)
    assert hdds == []
    assert [(n.network, n.mac, n.model) for n in vminfo.nics(parsed)] == [
        ("internal:Internet", "08:00:27:ca:0e:5d", "pcnet"),
        ("hostonly:VirtualBox Host-Only Ethernet Adapter", "08:00:27:ae:1f:98", "e1000"),
    ]


def test_multi_line_escaped_description_and_crlf() -> None:
    text = 'name="x"\r\ndescription="GNOME \\"Desktop\\"\r\nline two\r\n"\r\nGuestMemoryBalloon=0\r\n'
    parsed = machinereadable.parse(text.replace("\r\n", "\n"))
    assert parsed.get("description") == 'GNOME "Desktop"\nline two\n'
    assert parsed.get("GuestMemoryBalloon") == "0"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("poweroff", PowerState.STOPPED),
        ("saved", PowerState.SUSPENDED),
        ("aborted", PowerState.CRASHED),
        ("aborted-saved", PowerState.SUSPENDED),
        ("running", PowerState.RUNNING),
        ("paused", PowerState.PAUSED),
        ("gurumeditation", PowerState.CRASHED),
        ("stopping", PowerState.RUNNING),
        ("nonsense", PowerState.UNKNOWN),
    ],
)
def test_states(raw: str, state: PowerState) -> None:
    assert vminfo.state_of(raw) is state


# ---------------------------------------------------------------- the shared collection (not vendored)


def test_shared_koding_5_0_running() -> None:
    parsed, hdds = info_of(shared("showvminfo-machinereadable--koding-klient-5.0.txt"))
    s = vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None)
    assert (s.name, s.state, s.cpus, s.memory_mib) == (
        "urfve6cb85a2_default_1458910687825_39001",
        PowerState.RUNNING,
        2,
        2048,
    )
    assert [a.id for a in hdds] == ["SATAController-0-0"]
    assert parsed.get("GuestAdditionsFacility_VirtualBox Base Driver") == "50,1458910695598"
    assert parsed.get("VideoMode") == "720,400,0@0,0 1"
    assert len(listings.list_vms(shared("list-vms--koding-klient-5.0.txt"))) == 10


def test_shared_socbed_5_1_four_nics() -> None:
    parsed, hdds = info_of(shared("showvminfo-machinereadable--socbed-5.1.txt"))
    assert vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None).name == "Company Router"
    assert hdds == []
    assert [n.network for n in vminfo.nics(parsed)] == [
        "internal:Internet",
        "internal:DMZ",
        "internal:Internal",
        "hostonly:vboxnet0",
    ]


def test_shared_sergueik_6_0_windows() -> None:
    parsed, hdds = info_of(shared("showvminfo-machinereadable--sergueik-powershell-samples-6.0-windows.txt"))
    assert parsed.get("CfgFile") == "C:\\Users\\kouzm\\VirtualBox VMs\\Xubuntu 22.04\\Xubuntu 22.04.vbox"
    assert [a.path for a in hdds] == ["C:\\Virtual Machines\\xubuntu22.04-3.vdi"]
    assert [n.network for n in vminfo.nics(parsed)] == ["bridged:Intel(R) Wi-Fi 6E AX211 160MHz"]
    assert vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None).state is PowerState.RUNNING
    running = listings.list_vms(shared("list-runningvms--sergueik-powershell-samples-6.0-windows.txt"))
    assert [v.name for v in running] == ["Alpine39", "Xubuntu 22.04"]
    error = parse_error(shared("error-guestcontrol-logon-failed--sergueik-powershell-samples-windows.txt"))
    assert error is not None and error.code == "VBOX_E_IPRT_ERROR" and error_class(error) is TaskFailed


def test_shared_xtec_7_0() -> None:
    parsed, hdds = info_of(shared("showvminfo-machinereadable--xtec-dev-box-7.0.txt"))
    s = vminfo.summary(parsed, "n", parsed.get("UUID").lower(), None)
    assert (s.name, s.cpus, s.memory_mib, s.state) == ("xtec-1", 4, 6144, PowerState.STOPPED)
    assert "Encryption:     disabled" in parsed.loose_lines
    assert [a.path for a in hdds] == ["/home/david/.xtec/xtec-1/xtec-disk001.vmdk"]
    assert [n.network for n in vminfo.nics(parsed)] == [
        "nat",
        "hostonly:VirtualBox Host-Only Ethernet Adapter",
    ]
    assert parsed.get("BIOS NVRAM File") == "/home/david/.xtec/xtec-1/xtec-1.nvram"
    error = parse_error(shared("error-showvminfo-vm-not-found--xtec-dev-box-7.0.txt"))
    assert (
        error is not None and error_class(error) is NotFound and error.context.endswith("VBoxManageInfo.cpp")
    )


def test_shared_version_ubuntu_build() -> None:
    v = listings.parse_version(shared("version--easulimov-devops-netology-6.1.26-ubuntu.txt"))
    assert (str(v), v.build, v.revision) == ("6.1.26", "Ubuntu", 145957)


def test_per_version_commands() -> None:
    from anyvirt_virtualbox.create import medium_command, plan_disks

    from anyvirt.errors import InvalidSpec
    from anyvirt.model import DiskSpec

    versions = ("4.3.40r117366", "6.0.24r139119", "7.2.22_Debianr175245")
    v43, v60, v72 = (listings.parse_version(t) for t in versions)
    assert medium_command(v43) == ["createhd"]
    assert medium_command(v72) == ["createmedium", "disk"]
    assert plan_disks((DiskSpec(size_gib=1, bus="virtio"),), v72)[0].controller == "VirtIO"
    with pytest.raises(InvalidSpec, match=r"6\.1"):
        plan_disks((DiskSpec(size_gib=1, bus="virtio"),), v60)


# ---------------------------------------------------------------- hostile values


def test_a_description_ending_a_line_in_an_escaped_quote_stays_one_value() -> None:
    """7.2 prints the description ``x"`` + newline + ``UUID=...`` as below: the quote is
    escaped, so the value goes on to the closing quote and no line inside it is a key."""
    victim = "11111111-2222-3333-4444-555555555555"
    text = (
        'name="evil"\nUUID="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"\nCfgFile="/m/evil/evil.vbox"\n'
        'memory=64\ncpus=1\nVMState="poweroff"\n'
        f'description="x\\"\nUUID={victim}\nVMState=\\"running\\"\nmemory=0\nCfgFile=\\"/etc/shadow\\"\nzz="\n'
        "GuestMemoryBalloon=0\n"
    )
    parsed = machinereadable.parse(text)
    assert parsed.get("UUID") == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    assert (parsed.get("VMState"), parsed.get("memory"), parsed.get("CfgFile")) == (
        "poweroff", "64", "/m/evil/evil.vbox")
    assert parsed.get("description") == (
        f'x"\nUUID={victim}\nVMState="running"\nmemory=0\nCfgFile="/etc/shadow"\nzz=')
    assert parsed.duplicates == ()
    # the old releases' guess would end the value early: the keys then count once all the same
    guessed = machinereadable.parse(text, raw_paths=True)
    assert guessed.get("UUID") == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    assert guessed.get("VMState") == "poweroff"
    assert "UUID" in guessed.duplicates


def test_a_raw_snapshot_description_cannot_replace_keys_printed_before_it() -> None:
    text = (
        'UUID="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"\nmemory=64\nVMState="poweroff"\n'
        'SnapshotName="s1"\nSnapshotUUID="12345678-1234-1234-1234-123456789abc"\n'
        'SnapshotDescription="a"\nSnapshotUUID="x"\nGuestMemoryBalloon=0\nVMState="running"\nmemory=0"\n'
        'CurrentSnapshotName="s1"\nCurrentSnapshotUUID="12345678-1234-1234-1234-123456789abc"\n'
        'CurrentSnapshotNode="SnapshotName"\nGuestMemoryBalloon=0\n'
    )
    parsed = machinereadable.parse(text)
    assert (parsed.get("VMState"), parsed.get("memory")) == ("poweroff", "64")
    assert parsed.get("SnapshotUUID") == "12345678-1234-1234-1234-123456789abc"
    assert {"SnapshotUUID", "VMState", "memory"} <= set(parsed.duplicates)


def test_a_disk_file_named_by_a_clone_cannot_replace_its_record_s_uuid() -> None:
    """What the real 7.2 prints for a clone named (outside anyvirt) with newlines and
    ``UUID:`` lines: its disk file's name spans lines inside the record."""
    text = (
        "UUID:           2d9ce37d-2f8c-4d4c-8b61-1ae5a9b20466\nParent UUID:    base\n"
        "State:          created\nType:           normal (base)\n"
        "Location:       /m/c_UUID_/c\nUUID:           00000000-0000-0000-0000-000000000000\n"
        "Location: /etc/passwd\nx-disk1.vdi\nStorage format: VDI\nCapacity:       4 MBytes\n"
        "Encryption:     disabled\n\n"
    )
    (medium,) = listings.media(text)
    assert (medium.uuid, medium.location, medium.capacity_mib) == (
        "2d9ce37d-2f8c-4d4c-8b61-1ae5a9b20466", "/m/c_UUID_/c", 4)
