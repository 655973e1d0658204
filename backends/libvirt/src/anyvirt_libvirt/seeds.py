"""A VM's identity on libvirt: a NoCloud seed ISO in a pool volume, on a read-only CD-ROM.

The ISO (:func:`anyvirt.deployment.seed_iso`) is uploaded through libvirt's storage
stream API, so a remote daemon works as a local one. Its volume is named for the VM
(``<name>-cidata.iso``) in the pool of the VM's first disk, and belongs to that VM
alone: a clone that inherited its original's seed CD-ROM gets its own volume in that
drive (the original's volume is never touched), and ``delete_vm`` removes the VM's
own seed volume only (:func:`own_seed`). Reading back downloads the volume and reads
the ISO's files with pycdlib.
"""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET

import libvirt

from anyvirt.addresses import ReportedAddress
from anyvirt.deployment import ResolvedIdentity, compile_nocloud, seed_iso
from anyvirt.errors import AlreadyExists, InvalidSpec
from anyvirt.tasks import Job
from anyvirt_libvirt import addresses, storage, usage
from anyvirt_libvirt.connection import Link
from anyvirt_libvirt.site import Site

SUFFIX = "-cidata.iso"
#: the seed's drive: SATA (QEMU's q35 and i440fx both take it; libvirt adds the AHCI controller)
SEED_BUS, SEED_DEV = "sata", "sdz"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: the seed drive's user alias (libvirt keeps ``ua-`` aliases in the definition; a clone's
#: copied definition keeps it too, so the clone's seed replaces the inherited one)
SEED_ALIAS = "ua-anyvirt-seed"


def seed_volume_name(vm_name: str) -> str:
    return f"{vm_name}{SUFFIX}"


def _seed_drive(root: ET.Element) -> ET.Element | None:
    """The CD-ROM anyvirt put a seed in (this VM's, or one it inherited from its original),
    known by its user alias: an ISO of the user's own, whatever its name, is never taken
    for a seed (nor replaced, nor deleted)."""
    for disk in root.findall("devices/disk[@device='cdrom']"):
        alias = disk.find("alias")
        if alias is not None and alias.get("name") == SEED_ALIAS:
            return disk
    return None


def seed_to_remove(xml: str, vm_name: str, conn: libvirt.virConnect) -> str | None:
    """The seed volume deleting this VM frees: its own (named for it), or the one it
    inherited once the VM it was named for is gone (the last reader removes it). The
    caller keeps it while another domain still uses it."""
    drive = _seed_drive(ET.fromstring(xml))  # noqa: S314 - from the daemon
    source = drive.find("source") if drive is not None else None
    path = source.get("file", "") if source is not None else ""
    if not path.endswith(SUFFIX):
        return None
    owner = path.rsplit("/", 1)[-1][:-len(SUFFIX)]
    if owner == vm_name:
        return path
    try:
        conn.lookupByName(owner)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return path
        raise
    return None


def own_seed(xml: str, vm_name: str) -> str | None:
    """The path of the seed volume this VM owns (named for it), None if it has none."""
    drive = _seed_drive(ET.fromstring(xml))  # noqa: S314 - from the daemon
    source = drive.find("source") if drive is not None else None
    path = source.get("file", "") if source is not None else ""
    return path if path.rsplit("/", 1)[-1] == seed_volume_name(vm_name) else None


def _clear(conn: libvirt.virConnect, store: storage.DiskStore, name: str, vm_id: str) -> None:
    """Make room for the VM's seed volume: a volume of that name that no other domain
    uses is a seed left by a VM of this name that died being made, and goes; one that
    another domain uses (a clone still reading a deleted VM's seed) stays, and the
    seed cannot be written."""
    try:
        old = conn.storagePoolLookupByName(store.name).storageVolLookupByName(name)
    except libvirt.libvirtError:
        return
    path = str(old.path())
    owners = usage.other_domains(conn, vm_id).owners
    if path in owners:
        raise AlreadyExists(f"the seed volume {name!r} is in use by VM {owners[path]!r}; "
                            "delete or re-seed that VM first, or choose another name")
    old.delete(0)


def write_seed(link: Link, store: storage.DiskStore, vm_id: str, vm_name: str,
               identity: ResolvedIdentity, macs: list[str],
               job: Job | None = None) -> str:
    """The VM's seed ISO (compiled for its NICs' ``macs``, in their order) written into
    its own volume of ``store``; returns the volume's path. The volume is in the in-flight
    record until the caller's define settles it (:func:`storage.settle_made`): a daemon
    or process that dies in between leaves it to the next connection's sweep.

    A volume of the seed's name is rare (a VM of this name died being made), so it is
    looked for only when the daemon says the name is taken: one round trip fewer per VM."""
    data = seed_iso(compile_nocloud(identity, macs))
    name = seed_volume_name(vm_name)

    def sent(done: int, total: int) -> None:
        if job is not None:
            job.check()
            job.progress(100.0 * done / total, f"seed of {vm_name}: {done} of {total} bytes")

    try:
        return store.write(name, data, sent)
    except AlreadyExists:
        pass
    with link.call(f"make room for the seed of {vm_name!r}") as conn:
        _clear(conn, store, name, vm_id)
    return store.write(name, data, sent)


def place_seed(root: ET.Element, path: str) -> None:
    """Put the seed volume at ``path`` in the domain's seed drive (added if it has none;
    an inherited one gets this VM's own volume)."""
    drive = _seed_drive(root)
    if drive is None:
        devices = root.find("devices")
        assert devices is not None
        drive = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(drive, "driver", name="qemu", type="raw")
        ET.SubElement(drive, "target", dev=SEED_DEV, bus=SEED_BUS)
        ET.SubElement(drive, "readonly")
        ET.SubElement(drive, "alias", name=SEED_ALIAS)
    drive.set("type", "file")
    for old in drive.findall("source"):
        drive.remove(old)
    drive.insert(1, ET.Element("source", file=path))


def apply_identity(site: Site, dom: libvirt.virDomain, identity: ResolvedIdentity,
                   job: Job) -> None:
    """Write the seed of a VM just created, and define it with the seed in its drive. (A
    clone's seed is written before its one define: :mod:`cloning`.)"""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))  # noqa: S314 - from the daemon
    store = _store_of(site, root)
    path = write_seed(site.link, store, dom.UUIDString(), dom.name(), identity,
                      addresses.nic_macs(dom), job)
    made = [(store, path)]
    try:
        place_seed(root, path)
        with site.link.call(f"define {dom.name()!r} with its seed") as conn:
            conn.defineXML(ET.tostring(root, encoding="unicode"))
    except BaseException:
        storage.remove_made(made)
        raise
    storage.settle_made(made)


def _store_of(site: Site, root: ET.Element) -> storage.DiskStore:
    """The store of the VM's first disk in a pool: its seed goes next to it."""
    for disk in root.findall("devices/disk[@device='disk']"):
        source = disk.find("source")
        store = site.store_of(source.get("file", "")) if source is not None and source.get("file") else None
        if store is not None:
            return store
    raise InvalidSpec("the VM has no disk in a storage pool to keep its seed next to")


def read_identity(dom: libvirt.virDomain) -> dict[str, str] | None:
    """The seed ISO's files, downloaded from the VM's own seed volume."""
    path = own_seed(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.name())
    if path is None:
        return None
    conn = dom.connect()
    vol = conn.storageVolLookupByPath(path)
    size = int(vol.info()[1])
    stream = conn.newStream(0)
    vol.download(stream, 0, size, 0)
    chunks: list[bytes] = []
    while True:
        chunk = stream.recv(256 * 1024)
        if not chunk:  # b"" at the end; -2 would mean "again" on a non-blocking stream
            break
        if isinstance(chunk, bytes):
            chunks.append(chunk)
    stream.finish()
    return read_seed(b"".join(chunks))


def read_seed(image: bytes) -> dict[str, str]:
    """The files of a NoCloud seed ISO, by their Rock Ridge names."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        files: dict[str, str] = {}
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            with contextlib.suppress(pycdlib.pycdlibexception.PyCdlibInvalidInput):
                iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
                files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()


def guest_addresses(dom: libvirt.virDomain) -> list[ReportedAddress]:
    """Leases first, then the guest agent, then ARP (:mod:`anyvirt_libvirt.addresses`)."""
    return [ReportedAddress(a.mac, str(a.ip), a.prefix, a.source)
            for a in addresses.domain_addresses(dom)]


def guest_reports_up(dom: libvirt.virDomain) -> bool | None:
    """Whether the guest agent's channel is connected; None with no agent configured."""
    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - from the daemon
    for channel in root.findall("devices/channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == AGENT_CHANNEL:
            return target.get("state") == "connected"
    return None


__all__ = ["apply_identity", "guest_addresses", "guest_reports_up", "own_seed", "place_seed",
           "read_identity", "read_seed", "seed_to_remove", "seed_volume_name", "write_seed"]
