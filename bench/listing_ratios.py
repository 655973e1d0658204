"""Listing ratios: anyvirt's ``host.vms.list()`` against each platform's raw listing call.

Standalone (no pytest)::

    .venv/bin/python bench/listing_ratios.py libvirt [--domains 2000,10000] [--runs 15]
    .venv/bin/python bench/listing_ratios.py vsphere [--vms-per-pool 1000] [--runs 15]
    .venv/bin/python bench/listing_ratios.py proxmox [--nodes 4] [--guests 1000] [--runs 15]
    .venv/bin/python bench/listing_ratios.py virtualbox [--vms 200] [--runs 15] [--fake]

Each backend's testbed is the one its tests use (an isolated libvirtd with
shut-off QEMU domains; vcsim; fakepve; VirtualBox 7.2 in the Debian sid
chroot, or the fake ``VBoxManage`` with ``--fake``). Both contenders run on
the same, already open connection, taking turns (raw, anyvirt, raw, ...),
with a collection of garbage before each run so one side's garbage is not
collected during the other's. The figures are the medians of ``--runs``
runs each, after one warm-up run each; the ratio is median / median (the
median of the pairwise ratios is printed too: on a loaded machine they
should agree).

The raw call, per backend (the floor anyvirt is held to):

* libvirt: ``conn.getAllDomainStats(STATE|VCPU|BALLOON)``, nothing else
  (the answer is left unread); also shown: that call with each domain's
  ``UUIDString()`` and ``name()`` read (the least any listing reads: the
  stats carry neither), ``listAllDomains(0)`` plus that
  call (the raw of ``bench/libvirt_list.py``), and the two calls the listing
  makes, read by hand into tuples (what a script would write to get the
  same facts);
* vSphere: one ``PropertyCollector.RetrieveContents`` through plain pyVmomi
  with the listing's own path set over a container view made once;
* Proxmox: one proxmoxer ``GET /cluster/resources?type=vm``;
* VirtualBox: the ``VBoxManage list vms`` process, and ``list runningvms``
  where the host can run VMs (the listing runs the same), output unread.

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyvirt

Way = Callable[[], object]


def alternate(ways: dict[str, Way], runs: int) -> dict[str, list[float]]:
    """Every way ``runs`` times, taking turns, after one warm-up run each."""
    for way in ways.values():
        way()
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, way in ways.items():
            gc.collect()
            started = time.perf_counter()
            way()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def report(title: str, seconds: dict[str, list[float]], raw: str, others: tuple[str, ...] = ()) -> None:
    """Medians (and minimums), and anyvirt's ratio to ``raw`` (and to each of ``others``),
    with the load average (the machine is shared: a figure means little without it)."""
    runs = len(seconds[raw])
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{title} (medians of {runs} alternating runs; load average {load})")
    for name, values in seconds.items():
        print(f"  {name:34} {statistics.median(values) * 1000:9.2f} ms   (min {min(values) * 1000:9.2f} ms)")
    for floor in (raw, *others):
        ratio = statistics.median(seconds["anyvirt"]) / statistics.median(seconds[floor])
        pairwise = statistics.median(a / r for a, r in zip(seconds["anyvirt"], seconds[floor], strict=True))
        print(f"  anyvirt / {floor}: {ratio:.3f}x (median of pairwise ratios {pairwise:.3f}x)")


# ------------------------------------------------------------------ libvirt


def bench_libvirt(args: argparse.Namespace) -> None:
    import libvirt
    from anyvirt_libvirt.testbed.daemon import LibvirtDaemon

    stats = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU
             | libvirt.VIR_DOMAIN_STATS_BALLOON)
    managed_save = libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-") as tmp:
        daemon = LibvirtDaemon(Path(tmp) / "daemon", name="listing").start()
        try:
            conn = libvirt.open(daemon.uri)
            defined = 0
            for count in sorted(int(n) for n in args.domains.split(",")):
                started = time.perf_counter()
                for index in range(defined, count):
                    conn.defineXML(_minimal_domain(index))
                defined = count
                print(f"defined {count} shut-off QEMU domains "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)
                host = anyvirt.connect(daemon.anyvirt_uri)
                try:
                    assert len(host.vms.list()) == count

                    def raw() -> object:
                        return conn.getAllDomainStats(stats, 0)

                    def two_calls() -> object:
                        return conn.listAllDomains(0), conn.getAllDomainStats(stats, 0)

                    def ids_and_names() -> object:
                        # the least any listing reads: every domain's UUID and name
                        return [(d.UUIDString(), d.name()) for d, _s in conn.getAllDomainStats(stats, 0)]

                    def by_hand() -> object:
                        saved = {d.UUIDString() for d in conn.listAllDomains(managed_save)}
                        return [(d.UUIDString(), d.name(), s["state.state"], s["vcpu.current"],
                                 s["balloon.current"] // 1024, d.UUIDString() in saved)
                                for d, s in conn.getAllDomainStats(stats, 0)]

                    seconds = alternate({"getAllDomainStats": raw, "anyvirt": host.vms.list,
                                         "getAllDomainStats + ids and names": ids_and_names,
                                         "listAllDomains + getAllDomainStats": two_calls,
                                         "by hand (same calls, read)": by_hand}, args.runs)
                finally:
                    host.close()
                report(f"libvirt, {count} shut-off QEMU domains in a real libvirtd", seconds,
                       "getAllDomainStats",
                       ("getAllDomainStats + ids and names", "listAllDomains + getAllDomainStats",
                        "by hand (same calls, read)"))
            conn.close()
        finally:
            daemon.stop()


def _minimal_domain(index: int) -> str:
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = f"bench-{index:05d}"
    ET.SubElement(dom, "uuid").text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{index}"))
    ET.SubElement(dom, "memory", unit="MiB").text = "64"
    ET.SubElement(dom, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(dom, "os"), "type", arch="x86_64").text = "hvm"
    return ET.tostring(dom, encoding="unicode")


# ------------------------------------------------------------------ vSphere


def bench_vsphere(args: argparse.Namespace) -> None:
    import ssl

    from anyvirt_vsphere.inventory import LIST_PATHS
    from anyvirt_vsphere.testbed.vcsim import Vcsim
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl

    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="anyvirt-bench-", dir=shm if shm.is_dir() else None) as tmp:
        sim = Vcsim(clusters=2, hosts=4, standalone_hosts=0, pools=0, vms=args.vms_per_pool,
                    workdir=Path(tmp))
        sim.start(timeout=600)
        try:
            context = ssl.create_default_context(cafile=str(sim.ca_file))
            si = SmartConnect(host=sim.host, port=sim.port, user=sim.username, pwd=sim.password,
                              sslContext=context)
            content = si.RetrieveContent()
            pc = vmodl.query.PropertyCollector
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.VirtualMachine, vim.HostSystem], True)
            # the listing's own path set: the VMs' paths and the hosts' VM lists (for the node)
            spec = pc.FilterSpec(
                objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                    pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(LIST_PATHS)),
                         pc.PropertySpec(type=vim.HostSystem, pathSet=["vm"])],
            )
            host = anyvirt.connect(sim.anyvirt_uri_with_ca, password=sim.password)
            try:
                count = len(host.vms.list())

                def raw() -> object:
                    return content.propertyCollector.RetrieveContents([spec])

                seconds = alternate({"RetrieveContents (pyVmomi)": raw, "anyvirt": host.vms.list},
                                    args.runs)
            finally:
                host.close()
                view.DestroyView()
                Disconnect(si)
        finally:
            sim.stop()
    report(f"vSphere, vcsim with {count} VMs", seconds, "RetrieveContents (pyVmomi)")


# ------------------------------------------------------------------ Proxmox


def bench_proxmox(args: argparse.Namespace) -> None:
    from anyvirt_proxmox.testbed import HOST, USER, FakePveTestbed
    from proxmoxer import ProxmoxAPI

    with FakePveTestbed(nodes=args.nodes, guests=args.guests) as bed:
        api = ProxmoxAPI(HOST, port=bed.port, user=USER, password=bed.password,
                         verify_ssl=str(bed.cafile), timeout=60)
        host = anyvirt.connect(bed.uri, password=bed.password)
        try:
            count = len(host.vms.list())

            def raw() -> object:
                return api.cluster.resources.get(type="vm")

            seconds = alternate({"GET /cluster/resources (proxmoxer)": raw, "anyvirt": host.vms.list},
                                args.runs)
        finally:
            host.close()
    report(f"Proxmox VE, fakepve with {count} VMs on {args.nodes} nodes", seconds,
           "GET /cluster/resources (proxmoxer)")


# ------------------------------------------------------------------ VirtualBox


def bench_virtualbox(args: argparse.Namespace) -> None:
    import shutil

    from anyvirt_virtualbox.testbed import build_chroot, fake_vboxmanage, make_home, serving

    base = Path(tempfile.mkdtemp(prefix="anyvirt-bench-vbox-"))
    try:
        vboxmanage = fake_vboxmanage(base / "bin") if args.fake else build_chroot()
        home = make_home(vboxmanage, base)
        with serving(home):  # one VBoxSVC throughout: no start-up stalls in either contender
            _bench_home(home, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _bench_home(home: Any, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    for index in range(args.vms):
        name = f"bench-{index:04d}"
        home.run("createvm", "--name", name, "--ostype", "Other", "--register")
        home.run("modifyvm", name, "--cpus", str(1 + index % 4), "--memory", str(64 * (1 + index % 4)))
    print(f"registered {args.vms} VMs ({time.perf_counter() - started:.1f} s)", flush=True)
    env = home.env()
    with anyvirt.connect(home.uri) as host:
        # the processes the listing runs: no kernel driver, nothing runs, no ``list runningvms``
        lists = ("vms", "runningvms") if host.driver.kernel_driver else ("vms",)  # type: ignore[attr-defined]
        floor = "VBoxManage " + " + ".join(f"list {which}" for which in lists)

        def raw() -> object:
            return [subprocess.run([str(home.vboxmanage), "list", which], env=env, check=True,
                                   capture_output=True) for which in lists]

        count = len(host.vms.list())
        seconds = alternate({floor: raw, "anyvirt": host.vms.list}, args.runs)
    kind = "the fake VBoxManage" if args.fake else "VirtualBox 7.2 (Debian sid chroot)"
    report(f"VirtualBox, {count} registered VMs, {kind}", seconds, floor)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="backend", required=True)
    libvirt_args = sub.add_parser("libvirt")
    libvirt_args.add_argument("--domains", default="2000,10000")
    vsphere_args = sub.add_parser("vsphere")
    vsphere_args.add_argument("--vms-per-pool", type=int, default=1000)
    proxmox_args = sub.add_parser("proxmox")
    proxmox_args.add_argument("--nodes", type=int, default=4)
    proxmox_args.add_argument("--guests", type=int, default=1000)
    vbox_args = sub.add_parser("virtualbox")
    vbox_args.add_argument("--vms", type=int, default=200)
    vbox_args.add_argument("--fake", action="store_true", help="the fake VBoxManage, not 7.2")
    for each in (libvirt_args, vsphere_args, proxmox_args, vbox_args):
        each.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    {"libvirt": bench_libvirt, "vsphere": bench_vsphere, "proxmox": bench_proxmox,
     "virtualbox": bench_virtualbox}[args.backend](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
