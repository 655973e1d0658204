"""anyvirt's fake ``VBoxManage``: for running states only, held to VirtualBox 7.2's formats.

The real VirtualBox 7.2 of the testbed does everything except run a guest
(there is no ``vboxdrv`` here). This program stands in where a guest must run:
``startvm``, ``controlvm`` (pause, resume, reset, poweroff, savestate,
acpipowerbutton), ``discardstate`` and snapshots of running VMs. So that the
driver can be taken through a whole scenario on it, it also does the offline
commands the driver sends, with VirtualBox's argument syntax.

It keeps its state in ``$VBOX_USER_HOME/anyvirt-fake.json`` (locked per call)
and writes what VirtualBox writes for other readers: a ``.vbox`` settings file
per VM and the registry in ``VirtualBox.xml`` (the subset the driver reads, in
VirtualBox's own schema). Its outputs follow 7.2's byte for byte in layout:
``showvminfo --machinereadable`` prints 7.2's keys in 7.2's order (the tests
compare it with the real one for the same powered-off VM), plus the keys a
running VM adds (``SessionName``, ``VideoMode``, ``VRDEActiveConnection``,
from the captured outputs of running VMs); errors are ``VBoxManage: error:``
lines with VirtualBox's codes; ``--version`` says ``7.2.22_anyvirtfaker0``.
A guest here obeys the ACPI power button at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import subprocess
import sys
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = "7.2.22_anyvirtfaker0"
STATE_FILE = "anyvirt-fake.json"
RUNNING_STATES = ("running", "paused")

State = dict[str, Any]
VM = dict[str, Any]


class Fail(Exception):
    """A VBoxManage error: its lines go to stderr, the exit code is 1 (2 for syntax)."""

    def __init__(
        self,
        message: str,
        code: str = "",
        component: str = "MachineWrap",
        interface: str = "IMachine",
        exit_code: int = 1,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.component = component
        self.interface = interface
        self.exit_code = exit_code

    def lines(self) -> list[str]:
        out = [f"VBoxManage: error: {self}"]
        if self.code:
            hexes = {
                "VBOX_E_OBJECT_NOT_FOUND": "0x80bb0001",
                "VBOX_E_INVALID_VM_STATE": "0x80bb0002",
                "VBOX_E_FILE_ERROR": "0x80bb0004",
                "VBOX_E_INVALID_OBJECT_STATE": "0x80bb0007",
                "E_INVALIDARG": "0x80070057",
            }
            out.append(
                f"VBoxManage: error: Details: code {self.code} ({hexes.get(self.code, '0x80004005')}), "
                f"component {self.component}, interface {self.interface}, callee nsISupports"
            )
        return out


# ------------------------------------------------------------------ state


def _home() -> Path:
    home = os.environ.get("VBOX_USER_HOME")
    if not home:
        raise Fail("the fake VBoxManage needs VBOX_USER_HOME")
    return Path(home)


@contextlib.contextmanager
def _state() -> Iterator[State]:
    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / STATE_FILE
    with open(home / (STATE_FILE + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: State = (
            json.loads(path.read_text())
            if path.exists()
            else {"machine_folder": str(Path.home() / "VirtualBox VMs"), "vms": {}, "media": {}}
        )
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)
        _write_settings(home, state)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000")[:29]


def _find(state: State, ref: str) -> VM:
    vms = state["vms"]
    ref_l = ref.strip("{}").lower()
    if ref_l in vms:
        return vms[ref_l]  # type: ignore[no-any-return]
    for vm in vms.values():
        if vm["name"] == ref:
            return vm  # type: ignore[no-any-return]
    raise Fail(
        f"Could not find a registered machine named '{ref}'",
        "VBOX_E_OBJECT_NOT_FOUND",
        "VirtualBoxWrap",
        "IVirtualBox",
    )


def _options(args: list[str], flags: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and ``--option value`` pairs (``--opt=value`` too)."""
    pos: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
                opts[k] = v
            elif a in flags:
                opts[a] = ""
            else:
                if i + 1 >= len(args):
                    raise Fail(f"Missing the argument of option {a}", exit_code=2)
                opts[a] = args[i + 1]
                i += 1
        else:
            pos.append(a)
        i += 1
    return pos, opts


# ------------------------------------------------------------------ settings files


def _vbox_path(vm: VM) -> Path:
    return Path(vm["cfgfile"])


def _write_settings(home: Path, state: State) -> None:
    ns = "http://www.virtualbox.org/"
    root = ET.Element("VirtualBox", {"xmlns": ns, "version": "1.12-linux"})
    registry = ET.SubElement(ET.SubElement(root, "Global"), "MachineRegistry")
    for vm in state["vms"].values():
        ET.SubElement(registry, "MachineEntry", {"uuid": "{" + vm["uuid"] + "}", "src": vm["cfgfile"]})
        _write_vbox(vm)
    ET.ElementTree(root).write(home / "VirtualBox.xml", encoding="utf-8", xml_declaration=True)


def _write_vbox(vm: VM) -> None:
    path = _vbox_path(vm)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {
        "uuid": "{" + vm["uuid"] + "}",
        "name": vm["name"],
        "OSType": vm["ostype"],
        "snapshotFolder": "Snapshots",
        "currentStateModified": "true" if vm["modified"] else "false",
        "lastStateChange": vm["statechange"][:19] + "Z",
    }
    if vm["current_snapshot"]:
        attrs["currentSnapshot"] = "{" + vm["current_snapshot"] + "}"
    if vm["state"] in ("saved",):
        attrs["stateFile"] = f"Snapshots/{vm['statechange'][:19]}.sav"
    root = ET.Element("VirtualBox", {"xmlns": "http://www.virtualbox.org/", "version": "1.19-linux"})
    machine = ET.SubElement(root, "Machine", attrs)
    if vm["description"]:
        ET.SubElement(machine, "Description").text = vm["description"]
    if vm["extradata"]:
        extra = ET.SubElement(machine, "ExtraData")
        for k, v in vm["extradata"].items():
            ET.SubElement(extra, "ExtraDataItem", {"name": k, "value": v})
    roots = [s for s in vm["snapshots"] if s["parent"] is None]
    for snap in roots:
        _snapshot_element(machine, vm, snap)
    _hardware_element(machine, vm["hw"])
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _snapshot_element(parent: ET.Element, vm: VM, snap: dict[str, Any]) -> None:
    attrs = {"uuid": "{" + snap["uuid"] + "}", "name": snap["name"], "timeStamp": snap["time"]}
    if snap["state"]:
        attrs["stateFile"] = f"Snapshots/{{{snap['uuid']}}}.sav"
    el = ET.SubElement(parent, "Snapshot", attrs)
    if snap["description"]:
        ET.SubElement(el, "Description").text = snap["description"]
    _hardware_element(el, snap["hw"])
    children = [s for s in vm["snapshots"] if s["parent"] == snap["uuid"]]
    if children:
        holder = ET.SubElement(el, "Snapshots")
        for child in children:
            _snapshot_element(holder, vm, child)


def _hardware_element(parent: ET.Element, hw: dict[str, Any]) -> None:
    el = ET.SubElement(parent, "Hardware")
    ET.SubElement(el, "Memory", {"RAMSize": str(hw["memory"])})
    ET.SubElement(el, "CPU", {"count": str(hw["cpus"])} if hw["cpus"] != 1 else {})


# ------------------------------------------------------------------ output formats


def _q(value: str) -> str:
    """7.2's outputMachineReadableString: only a quote and a backslash are escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NIC_COMPANION = {
    "bridged": "bridgeadapter",
    "hostonly": "hostonlyadapter",
    "intnet": "intnet",
    "natnetwork": "nat-network",
}


def _showvminfo(state: State, vm: VM) -> list[str]:
    hw = vm["hw"]
    folder = str(_vbox_path(vm).parent)
    base = str(_vbox_path(vm).with_suffix(""))
    out = [
        f"name={_q(vm['name'])}",
        'encryption="disabled"',
        'groups="/"',
        'platformArchitecture="x86"',
        f"ostype={_q(str(_OS_DESCRIPTIONS.get(vm['ostype'], vm['ostype'])))}",
        f'UUID="{vm["uuid"]}"',
        f"CfgFile={_q(vm['cfgfile'])}",
        f"SnapFldr={_q(folder + '/Snapshots')}",
        f"LogFldr={_q(folder + '/Logs')}",
        f'hardwareuuid="{vm["uuid"]}"',
        f"memory={hw['memory']}",
        'pagefusion="off"',
        "vram=8",
        "cpuexecutioncap=100",
        'cpu-profile="host"',
        'chipset="piix3"',
        f'firmware="{"EFI" if hw["firmware"] == "efi" else "BIOS"}"',
        f"cpus={hw['cpus']}",
        'hpet="off"',
        'pae="off"',
        'longmode="off"',
        'triplefaultreset="off"',
        'apic="on"',
        'x2apic="off"',
        'nested-hw-virt="off"',
        'hwvirtex="on"',
        'nestedpaging="on"',
        'largepages="off"',
        'vtxvpid="on"',
        'vtxux="on"',
        'virtvmsavevmload="on"',
        "cpuid-portability-level=0",
        'bootmenu="messageandmenu"',
        'boot1="floppy"',
        'boot2="dvd"',
        'boot3="disk"',
        'boot4="none"',
        'acpi="on"',
        'ioapic="off"',
        'biosapic="apic"',
        "biossystemtimeoffset=0",
        f"NvramFile={_q(base + '.nvram')}",
        'rtcuseutc="off"',
        'iommu="none"',
        'paravirtprovider="default"',
        'effparavirtprovider="none"',
        f'VMState="{vm["state"]}"',
        f'VMStateChangeTime="{vm["statechange"]}"',
    ]
    if vm["state"] == "saved":
        out.append(f"VMStateFile={_q(folder + '/Snapshots/' + vm['statechange'][:19] + '.sav')}")
    out += [
        'graphicscontroller="vboxvga"',
        "monitorcount=1",
        'accelerate3d="off"',
        'teleporterenabled="off"',
        "teleporterport=0",
        'teleporteraddress=""',
        'teleporterpassword=""',
        'tracing-enabled="off"',
        'tracing-allow-vm-access="off"',
        'tracing-config=""',
        'autostart-enabled="off"',
        "autostart-delay=0",
        'defaultfrontend=""',
        'vmprocpriority="default"',
    ]
    for i, ctl in enumerate(hw["controllers"]):
        out += [
            f"storagecontrollername{i}={_q(ctl['name'])}",
            f'storagecontrollertype{i}="{ctl["type"]}"',
            f'storagecontrollerinstance{i}="0"',
            f'storagecontrollermaxportcount{i}="{ctl["max"]}"',
            f'storagecontrollerportcount{i}="{ctl["ports"]}"',
            f'storagecontrollerbootable{i}="on"',
        ]
    for ctl in hw["controllers"]:
        for port in range(ctl["ports"]):
            for dev in range(ctl["devices"]):
                key = f"{ctl['name']}-{port}-{dev}"
                medium = hw["attachments"].get(key)
                if medium is None:
                    out.append(f'{_q(key)}="none"')
                    continue
                location = state["media"][medium]["location"]
                out += [
                    f"{_q(key)}={_q(location)}",
                    f'{_q(ctl["name"] + "-ImageUUID-" + f"{port}-{dev}")}="{medium}"',
                ]
                if ctl["type"] == "IntelAhci":
                    out.append(f'{_q(ctl["name"] + "-hot-pluggable-" + f"{port}-{dev}")}="off"')
                out += [
                    f'{_q(ctl["name"] + "-nonrotational-" + f"{port}-{dev}")}="off"',
                    f'{_q(ctl["name"] + "-discard-" + f"{port}-{dev}")}="off"',
                ]
    for slot in range(1, 9):
        nic = hw["nics"].get(str(slot))
        if nic is None:
            out.append(f'nic{slot}="none"')
            continue
        if nic["kind"] == "nat":
            out.append(f'natnet{slot}="nat"')
        else:
            out.append(f"{_NIC_COMPANION[nic['kind']]}{slot}={_q(nic['network'])}")
        out += [
            f'macaddress{slot}="{nic["mac"]}"',
            f'cableconnected{slot}="on"',
            f'nic{slot}="{nic["kind"]}"',
            f'nictype{slot}="{nic["type"]}"',
            f'nicspeed{slot}="0"',
        ]
        if nic["kind"] == "nat":
            out += [
                'mtu="0"',
                'sockSnd="64"',
                'sockRcv="64"',
                'tcpWndSnd="64"',
                'tcpWndRcv="64"',
                'localhostReachable="0"',
                'forwardBroadcast="0"',
                'enableTFTP="0"',
            ]
    out += [
        'hidpointing="ps2mouse"',
        'hidkeyboard="ps2kbd"',
        'uart1="off"',
        'uart2="off"',
        'uart3="off"',
        'uart4="off"',
        'lpt1="off"',
        'lpt2="off"',
        'audio="default"',
        'audio_out="off"',
        'audio_in="off"',
        'clipboard="disabled"',
        'clipboard_file_transfers="off"',
        'draganddrop="disabled"',
    ]
    running = vm["state"] in RUNNING_STATES
    if running:  # what a running VM adds (captures of running 5.0 and 6.0 VMs)
        out += ['SessionName="headless"', 'VideoMode="720,400,0"@0,0 1']
    out += ['vrde="off"', 'usb="off"', 'ehci="off"', 'xhci="off"']
    if running:
        out += ['VRDEActiveConnection="off"', "VRDEClients=0"]
    out += [
        'recording_started="off"',
        'recording_enabled="off"',
        "recording_screens=1",
        " rec_screen0",
        'rec_screen_enabled="on"',
        "rec_screen_id=0",
        'rec_screen_video_enabled="on"',
        'rec_screen_audio_enabled="off"',
        'rec_screen_dest="File"',
        f"rec_screen_dest_filename={_q(base + '-screen0.webm')}",
        'rec_screen_opts="ac_profile=med"',
        'rec_screen_video_res_xy="1024x768"',
        "rec_screen_video_rate_kbps=512",
        "rec_screen_video_fps=25",
    ]
    if vm["description"]:
        out.append(f"description={_q(vm['description'])}")
    out.append("GuestMemoryBalloon=0")
    out += _snapshot_lines(vm)
    return out


_OS_DESCRIPTIONS = {
    "Other": "Other/Unknown",
    "Linux_64": "Other Linux (64-bit)",
    "Windows10_64": "Windows 10 (64-bit)",
}


def _snapshot_lines(vm: VM) -> list[str]:
    """7.2 prints snapshot values raw (no escaping), the current one right after its own lines."""
    out: list[str] = []

    def walk(snap: dict[str, Any], path: str) -> None:
        out.extend([f'SnapshotName{path}="{snap["name"]}"', f'SnapshotUUID{path}="{snap["uuid"]}"'])
        if snap["description"]:
            out.append(f'SnapshotDescription{path}="{snap["description"]}"')
        if snap["uuid"] == vm["current_snapshot"]:
            out.extend(
                [
                    f'CurrentSnapshotName="{snap["name"]}"',
                    f'CurrentSnapshotUUID="{snap["uuid"]}"',
                    f'CurrentSnapshotNode="SnapshotName{path}"',
                ]
            )
        children = [s for s in vm["snapshots"] if s["parent"] == snap["uuid"]]
        for n, child in enumerate(children, start=1):
            walk(child, f"{path}-{n}")

    for snap in vm["snapshots"]:
        if snap["parent"] is None:
            walk(snap, "")
    return out


# ------------------------------------------------------------------ commands

Handler = Callable[[State, list[str]], list[str]]


def cmd_version(state: State, args: list[str]) -> list[str]:
    return [VERSION]


def cmd_list(state: State, args: list[str]) -> list[str]:
    what = [a for a in args if not a.startswith("--")]
    if not what:
        raise Fail('Missing subcommand for "list" command.', exit_code=2)
    kind = what[0]
    if kind == "vms":
        return [f'"{vm["name"]}" {{{vm["uuid"]}}}' for vm in state["vms"].values()]
    if kind == "runningvms":
        return [
            f'"{vm["name"]}" {{{vm["uuid"]}}}'
            for vm in state["vms"].values()
            if vm["state"] in RUNNING_STATES
        ]
    if kind == "hostinfo":
        return [
            "Host Information:",
            "",
            f"Host time: {_now()}Z",
            "Processor online count: 8",
            "Processor count: 8",
            "Processor online core count: 8",
            "Processor core count: 8",
            "Processor supports HW virtualization: yes",
            "Memory size: 65536 MByte",
            "Memory available: 60000 MByte",
            "Operating system: Linux",
            "Operating system version: 6.1.0-anyvirt-fake",
        ]
    if kind == "hdds":
        out: list[str] = []
        for m_uuid, m in state["media"].items():
            out += [
                f"UUID:           {m_uuid}",
                f"Parent UUID:    {m['parent'] or 'base'}",
                "State:          created",
                f"Type:           normal ({'differencing' if m['parent'] else 'base'})",
                f"Location:       {m['location']}",
                f"Storage format: {m['format']}",
                f"Capacity:       {m['capacity']} MBytes",
                "Encryption:     disabled",
                "",
            ]
        return out
    if kind == "hostonlyifs":
        return []
    if kind == "systemproperties":
        return [
            "API version:                     7_2",
            f"Default machine folder:          {state['machine_folder']}",
            "Default hard disk format:        VDI",
        ]
    raise Fail(f'Unknown subcommand "{kind}".', exit_code=2)


def cmd_setproperty(state: State, args: list[str]) -> list[str]:
    if len(args) >= 2 and args[0] == "machinefolder":
        state["machine_folder"] = args[1]
        return []
    raise Fail(f"Invalid parameter '{args[0] if args else ''}'", exit_code=2)


def cmd_showvminfo(state: State, args: list[str]) -> list[str]:
    pos, _ = _options(args, ("--machinereadable",))
    return _showvminfo(state, _find(state, pos[0]))


def _new_vm(state: State, name: str, vm_uuid: str, ostype: str) -> VM:
    # 7.2's file name for a VM name: these characters become "_", and so does a leading "-"
    # ("--help" lives in "_-help/_-help.vbox", "-v" in "_v/_v.vbox")
    safe = "".join("_" if c in '/\\:*?"<>|$;' else c for c in name)
    if safe.startswith("-"):
        safe = "_" + safe[1:]
    path = Path(state["machine_folder"]) / safe / f"{safe}.vbox"
    if any(v["cfgfile"] == str(path) for v in state["vms"].values()):
        raise Fail(f"Machine settings file '{path}' already exists", "VBOX_E_FILE_ERROR")
    return {
        "uuid": vm_uuid,
        "name": name,
        "ostype": ostype,
        "description": "",
        "state": "poweroff",
        "statechange": _now(),
        "cfgfile": str(path),
        "hw": {
            "cpus": 1,
            "memory": 128,
            "firmware": "bios",
            "controllers": [],
            "attachments": {},
            "nics": {"1": {"kind": "nat", "network": "", "mac": _mac(), "type": "Am79C973"}},
        },
        "snapshots": [],
        "current_snapshot": None,
        "extradata": {},
        "modified": False,
        "saved_snapshot": None,
    }


def _qemu_img(*args: str) -> str:
    """Disk files are real images (qemu-img writes VDI), so what is exported can be read back."""
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise Fail(
            f"qemu-img {args[0]} failed: {done.stderr.strip()}", "VBOX_E_FILE_ERROR", "MediumWrap", "IMedium"
        )
    return done.stdout


def _mac() -> str:
    return "080027" + uuidlib.uuid4().hex[:6].upper()


def cmd_createvm(state: State, args: list[str]) -> list[str]:
    _, opts = _options(args, ("--register",))
    name = opts.get("--name")
    if not name:
        raise Fail("Parameter --name is required", exit_code=2)
    vm_uuid = (opts.get("--uuid") or str(uuidlib.uuid4())).lower()
    vm = _new_vm(state, name, vm_uuid, opts.get("--ostype", "Other"))
    vm["hw"]["nics"] = {"1": {"kind": "nat", "network": "", "mac": _mac(), "type": "Am79C973"}}
    state["vms"][vm_uuid] = vm
    return [
        f"Virtual machine '{name}' is created and registered.",
        f"UUID: {vm_uuid}",
        f"Settings file: '{vm['cfgfile']}'",
    ]


def _offline(vm: VM) -> None:
    if vm["state"] in RUNNING_STATES or vm["state"] == "saved":
        raise Fail(
            f"The machine '{vm['name']}' is already locked for a session (or being unlocked)",
            "VBOX_E_INVALID_OBJECT_STATE",
            "MachineWrap",
            "IMachine",
        )


def cmd_modifyvm(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args)
    vm = _find(state, pos[0])
    _offline(vm)
    hw = vm["hw"]
    for key, value in opts.items():
        if key == "--cpus":
            hw["cpus"] = int(value)
        elif key == "--memory":
            hw["memory"] = int(value)
        elif key == "--firmware":
            hw["firmware"] = value.lower()
        elif key == "--description":
            vm["description"] = value
        elif key.startswith("--nic") and key[5:].isdigit():
            slot = key[5:]
            if value == "none":
                hw["nics"].pop(slot, None)
            else:
                hw["nics"].setdefault(slot, {"kind": value, "network": "", "mac": _mac(), "type": "Am79C973"})
                hw["nics"][slot]["kind"] = value
        elif key.startswith(
            ("--nictype", "--macaddress", "--bridgeadapter", "--hostonlyadapter", "--intnet", "--nat-network")
        ):
            field = key.rstrip("0123456789")
            slot = key[len(field) :]
            nic = hw["nics"].setdefault(
                slot, {"kind": "nat", "network": "", "mac": _mac(), "type": "Am79C973"}
            )
            if field == "--nictype":
                nic["type"] = value
            elif field == "--macaddress":
                nic["mac"] = value.upper()
            else:
                nic["network"] = value
        else:
            raise Fail(f"Invalid parameter '{key}'", exit_code=2)
    vm["modified"] = True
    return []


def cmd_storagectl(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args)
    vm = _find(state, pos[0])
    kinds = {
        "IntelAhci": (30, 1),
        "PIIX4": (2, 2),
        "LsiLogic": (16, 1),
        "NVMe": (255, 1),
        "VirtioSCSI": (256, 1),
    }
    # as 7.2: the argument "VirtIO" makes a controller showvminfo types "VirtioSCSI"
    argument = opts.get("--controller", "IntelAhci")
    if argument == "VirtioSCSI":
        raise Fail(f"Invalid --type argument '{argument}'", exit_code=2)
    ctl_type = {"VirtIO": "VirtioSCSI"}.get(argument, argument)
    maxports, devices = kinds.get(ctl_type, (30, 1))
    ports = int(opts.get("--portcount", "2" if ctl_type == "PIIX4" else "1"))
    vm["hw"]["controllers"].append(
        {"name": opts["--name"], "type": ctl_type, "max": maxports, "ports": ports, "devices": devices}
    )
    return []


def cmd_createmedium(state: State, args: list[str]) -> list[str]:
    _, opts = _options(args)
    path = Path(opts["--filename"])
    path.parent.mkdir(parents=True, exist_ok=True)
    size = int(opts["--size"])
    _qemu_img("create", "-q", "-f", "vdi", str(path), f"{size}M")
    m_uuid = str(uuidlib.uuid4())
    state["media"][m_uuid] = {
        "location": str(path),
        "format": opts.get("--format", "VDI").upper(),
        "capacity": size,
        "parent": None,
    }
    return [
        "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%",
        f"Medium created. UUID: {m_uuid}",
    ]


def _medium_by_path(state: State, path: str) -> str:
    for m_uuid, m in state["media"].items():
        if m["location"] == path or m_uuid == path:
            return str(m_uuid)
    if os.path.exists(path):  # an image made outside VirtualBox: opened on first use
        m_uuid = str(uuidlib.uuid4())
        facts = json.loads(_qemu_img("info", "--output=json", path))
        state["media"][m_uuid] = {
            "location": path,
            "format": str(facts["format"]).upper(),
            "capacity": max(1, int(facts["virtual-size"]) // (1024 * 1024)),
            "parent": None,
        }
        return m_uuid
    raise Fail(f"Could not find file for the medium '{path}' (VERR_FILE_NOT_FOUND)", "VBOX_E_FILE_ERROR")


def cmd_storageattach(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args)
    vm = _find(state, pos[0])
    key = f"{opts['--storagectl']}-{opts['--port']}-{opts['--device']}"
    vm["hw"]["attachments"][key] = _medium_by_path(state, opts["--medium"])
    return []


def cmd_closemedium(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args, ("--delete",))
    target = pos[-1]
    m_uuid = _medium_by_path(state, target)
    location = state["media"].pop(m_uuid)["location"]
    if "--delete" in opts:
        with contextlib.suppress(OSError):
            os.remove(location)
    return []


def cmd_modifymedium(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args)
    m_uuid = _medium_by_path(state, pos[-1])
    if "--resize" in opts:
        state["media"][m_uuid]["capacity"] = int(opts["--resize"])
    return []


def cmd_clonemedium(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args)
    src = _medium_by_path(state, pos[-2])
    dest = Path(pos[-1])
    chain = []
    m: str | None = src
    while m:
        chain.append(m)
        m = state["media"][m]["parent"]
    # the fake's differencing images hold nothing of their own: the base is the content
    _qemu_img("convert", "-q", "-O", "vdi", state["media"][chain[-1]]["location"], str(dest))
    new = str(uuidlib.uuid4())
    state["media"][new] = {
        "location": str(dest),
        "format": opts.get("--format", "VDI").upper(),
        "capacity": state["media"][src]["capacity"],
        "parent": None,
    }
    return [f"Clone medium created in format '{state['media'][new]['format']}'. UUID: {new}"]


def _vm_media(vm: VM) -> set[str]:
    found = set(vm["hw"]["attachments"].values())
    for snap in vm["snapshots"]:
        found |= set(snap["hw"]["attachments"].values())
    return found


def cmd_unregistervm(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args, ("--delete", "--delete-all"))
    vm = _find(state, pos[0])
    if vm["state"] in RUNNING_STATES:
        raise Fail(
            f"Cannot unregister the machine '{vm['name']}' while it is locked", "VBOX_E_INVALID_OBJECT_STATE"
        )
    del state["vms"][vm["uuid"]]
    if "--delete" in opts or "--delete-all" in opts:
        others = set().union(*(_vm_media(v) for v in state["vms"].values())) if state["vms"] else set()
        for m_uuid in _vm_media(vm) - others:
            medium = state["media"].pop(m_uuid, None)
            if medium and medium["location"].startswith(str(_vbox_path(vm).parent)):
                with contextlib.suppress(OSError):
                    os.remove(medium["location"])
        with contextlib.suppress(OSError):
            _vbox_path(vm).unlink()
        with contextlib.suppress(OSError):  # as 7.2: the VM's folder goes when it is left empty,
            _vbox_path(vm).parent.rmdir()  # a folder in it (a clone's "team/" disk folder) stays
    return []


def _set_state(vm: VM, new: str) -> None:
    vm["state"] = new
    vm["statechange"] = _now()


def cmd_startvm(state: State, args: list[str]) -> list[str]:
    pos, _ = _options(args)
    vm = _find(state, pos[0])
    if vm["state"] in RUNNING_STATES:
        raise Fail(
            f"The machine '{vm['name']}' is already locked by a session (or being locked or unlocked)",
            "VBOX_E_INVALID_OBJECT_STATE",
        )
    _set_state(vm, "running")
    return [f'Waiting for VM "{pos[0]}" to power on...', f'VM "{pos[0]}" has been successfully started.']


def cmd_controlvm(state: State, args: list[str]) -> list[str]:
    vm = _find(state, args[0])
    action = args[1] if len(args) > 1 else ""
    if vm["state"] not in RUNNING_STATES:
        raise Fail(f"Machine '{args[0]}' is not currently running.")
    transitions = {
        "pause": ("running", "paused"),
        "resume": ("paused", "running"),
        "reset": ("running", "running"),
        "poweroff": (None, "poweroff"),
        "acpipowerbutton": ("running", "poweroff"),
        "savestate": (None, "saved"),
    }
    if action not in transitions:
        raise Fail(f"Invalid parameter '{action}'", exit_code=2)
    need, new = transitions[action]
    if need is not None and vm["state"] != need:
        raise Fail(
            f"Invalid machine state: {vm['state'].capitalize()}",
            "VBOX_E_INVALID_VM_STATE",
            "ConsoleWrap",
            "IConsole",
        )
    _set_state(vm, new)
    if action in ("poweroff", "acpipowerbutton"):
        vm["saved_snapshot"] = None
    return (
        ["0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%"]
        if action in ("poweroff", "savestate")
        else []
    )


def cmd_discardstate(state: State, args: list[str]) -> list[str]:
    vm = _find(state, args[0])
    if vm["state"] != "saved":
        raise Fail("Machine does not have a saved state", "VBOX_E_INVALID_VM_STATE")
    _set_state(vm, "poweroff")
    return []


def cmd_setextradata(state: State, args: list[str]) -> list[str]:
    vm = _find(state, args[0])
    if len(args) >= 3:
        vm["extradata"][args[1]] = args[2]
    else:
        vm["extradata"].pop(args[1], None)
    return []


def cmd_guestproperty(state: State, args: list[str]) -> list[str]:
    """``set`` (what a guest's Additions would write: the tests play the guest), ``get``,
    ``unset``/``delete`` and ``enumerate`` in 7.2's layout: names padded to the longest,
    ``= '<value>'`` (printed raw), then `` @ <time>`` unless ``--no-timestamp``."""
    verb, rest = args[0], args[1:]
    pos, opts = _options(rest, ("--no-timestamp", "--no-flags", "--relative", "--old-format"))
    vm = _find(state, pos[0])
    props: dict[str, list[str]] = vm.setdefault("guestprops", {})
    if verb == "set":
        if len(pos) >= 3:
            props[pos[1]] = [pos[2], _now()[:23] + "Z"]
        else:
            props.pop(pos[1], None)
        return []
    if verb in ("unset", "delete"):
        props.pop(pos[1], None)
        return []
    if verb == "get":
        return [f"Value: {props[pos[1]][0]}"] if pos[1] in props else ["No value set!"]
    if verb != "enumerate":
        raise Fail(f"Invalid parameter '{verb}'", exit_code=2)
    patterns = [p for arg in pos[1:] for p in arg.split("|")]
    shown = sorted((n, v) for n, v in props.items()
                   if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns))
    if not shown:
        return []
    width = max(len(n) for n, _ in shown)
    quoted = max(len(v[0]) + 2 for _, v in shown)
    if "--no-timestamp" in opts:
        return [f"{n.ljust(width)} = '{v[0]}'" for n, v in shown]
    return [f"{n.ljust(width)} = {(chr(39) + v[0] + chr(39)).ljust(quoted)} @ {v[1]}" for n, v in shown]


def cmd_snapshot(state: State, args: list[str]) -> list[str]:
    vm = _find(state, args[0])
    sub = args[1] if len(args) > 1 else ""
    rest = args[2:]
    if sub == "list":
        lines = _snapshot_lines(vm)
        return lines or ["This machine does not have any snapshots"]
    if sub == "take":
        # the name is the argument right after "take", whatever it looks like ("-x" too)
        pos, opts = _options(rest[1:], ("--live", "--pause"))
        pos = rest[:1] + pos
        if any(s["name"] == pos[0] for s in vm["snapshots"]) and "--uniquename" not in opts:
            pass  # VirtualBox allows duplicate snapshot names; anyvirt's core refuses them first
        snap = {
            "uuid": str(uuidlib.uuid4()),
            "name": pos[0],
            "description": opts.get("--description", ""),
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "parent": vm["current_snapshot"],
            "state": vm["state"] if vm["state"] in RUNNING_STATES else None,
            "hw": json.loads(json.dumps(vm["hw"])),
        }
        vm["snapshots"].append(snap)
        vm["current_snapshot"] = snap["uuid"]
        vm["modified"] = False
        return [
            "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%",
            f"Snapshot taken. UUID: {snap['uuid']}",
        ]
    snap = _find_snapshot(vm, rest[0] if rest else "")
    if sub == "restore":
        if vm["state"] in RUNNING_STATES:
            raise Fail(
                f"Cannot restore a snapshot of the machine '{vm['name']}' while it is running",
                "VBOX_E_INVALID_VM_STATE",
                "SessionMachine",
            )
        vm["hw"] = json.loads(json.dumps(snap["hw"]))
        vm["current_snapshot"] = snap["uuid"]
        vm["modified"] = False
        _set_state(vm, "saved" if snap["state"] else "poweroff")
        return [
            f"Restoring snapshot '{snap['name']}' ({snap['uuid']})",
            "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%",
        ]
    if sub == "delete":
        children = [s for s in vm["snapshots"] if s["parent"] == snap["uuid"]]
        if len(children) > 1:
            raise Fail(
                f"Snapshot '{snap['name']}' of the machine '{vm['name']}' cannot be deleted, because it "
                f"has {len(children)} child snapshots, which is more than the one snapshot allowed for "
                "deletion",
                "VBOX_E_INVALID_OBJECT_STATE",
                "SessionMachine",
            )
        for child in children:
            child["parent"] = snap["parent"]
        vm["snapshots"].remove(snap)
        if vm["current_snapshot"] == snap["uuid"]:
            vm["current_snapshot"] = snap["parent"]
        return [
            f"Deleting snapshot '{snap['name']}' ({snap['uuid']})",
            "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%",
        ]
    raise Fail(f"Invalid parameter '{sub}'", exit_code=2)


def _find_snapshot(vm: VM, ref: str) -> dict[str, Any]:
    for snap in vm["snapshots"]:
        if snap["uuid"] == ref.lower() or snap["name"] == ref:
            return snap  # type: ignore[no-any-return]
    raise Fail(f"Could not find a snapshot named '{ref}'", "VBOX_E_OBJECT_NOT_FOUND", "SessionMachine")


def cmd_clonevm(state: State, args: list[str]) -> list[str]:
    pos, opts = _options(args, ("--register",))
    src = _find(state, pos[0])
    name = opts["--name"]
    new_uuid = (opts.get("--uuid") or str(uuidlib.uuid4())).lower()
    clone = _new_vm(state, name, new_uuid, src["ostype"])
    hw = json.loads(json.dumps(src["hw"]))
    if "--snapshot" in opts:
        hw = json.loads(json.dumps(_find_snapshot(src, opts["--snapshot"])["hw"]))
    folder = _vbox_path(clone).parent
    linked = "link" in opts.get("--options", "").split(",")
    for key, m_uuid in list(hw["attachments"].items()):
        base = state["media"][m_uuid]
        new_m = str(uuidlib.uuid4())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (
            "Snapshots/{" + new_m + "}.vdi" if linked else f"{name}-disk{len(hw['attachments'])}.vdi"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        if linked:
            path.write_bytes(b"")
        else:
            _qemu_img("convert", "-q", "-O", "vdi", base["location"], str(path))
        state["media"][new_m] = {
            "location": str(path),
            "format": "VDI",
            "capacity": base["capacity"],
            "parent": m_uuid if linked else None,
        }
        hw["attachments"][key] = new_m
    for nic in hw["nics"].values():
        nic["mac"] = _mac()
    clone["hw"] = hw
    clone["description"] = src["description"]
    state["vms"][new_uuid] = clone
    return [
        "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%",
        f'Machine has been successfully cloned as "{name}"',
    ]


COMMANDS: dict[str, Handler] = {
    "--version": cmd_version,
    "-v": cmd_version,
    "list": cmd_list,
    "setproperty": cmd_setproperty,
    "showvminfo": cmd_showvminfo,
    "createvm": cmd_createvm,
    "modifyvm": cmd_modifyvm,
    "storagectl": cmd_storagectl,
    "createmedium": cmd_createmedium,
    "storageattach": cmd_storageattach,
    "closemedium": cmd_closemedium,
    "modifymedium": cmd_modifymedium,
    "clonemedium": cmd_clonemedium,
    "unregistervm": cmd_unregistervm,
    "startvm": cmd_startvm,
    "controlvm": cmd_controlvm,
    "discardstate": cmd_discardstate,
    "setextradata": cmd_setextradata,
    "guestproperty": cmd_guestproperty,
    "snapshot": cmd_snapshot,
    "clonevm": cmd_clonevm,
}


def main(argv: list[str]) -> int:
    if not argv:
        print("Usage: VBoxManage <command> ...", file=sys.stderr)
        return 2
    handler = COMMANDS.get(argv[0])
    if handler is None:
        print(f'VBoxManage: error: Unknown command "{argv[0]}".', file=sys.stderr)
        return 2
    try:
        if handler is cmd_version:
            print(VERSION)
            return 0
        with _state() as state:
            lines = handler(state, argv[1:])
    except Fail as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return exc.exit_code
    except (KeyError, IndexError, ValueError) as exc:
        print(f"VBoxManage: error: Invalid arguments ({exc})", file=sys.stderr)
        return 2
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
