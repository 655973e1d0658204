"""Benchmark: the Ansible inventory plugin against ``anyvirt vms --json``, on the same URIs.

Starts fakepve with ``--guests`` VMs (1,000 by default) on ``--nodes`` nodes and, with
``--vcsim-vms N``, a vcsim vCenter with N more, then times, taking turns:

* ``anyvirt vms --json URI...``: one process over every URI (the CLI lists several side by side);
* ``ansible-inventory -i lab.anyvirt.yml --list``: the collection's plugin over all URIs in one
  process (cache off, so every run lists);
* the floor no plugin can go below: ``ansible-inventory --list`` of an empty inventory, and the
  same in a process that first imports anyvirt and the URIs' backends, as the plugin must (no
  listing, no hosts).

Each is timed as wall time and as CPU time (user + system of the process); on a loaded machine the
CPU times are the steadier figure.

It also times both inside this process, without either program's start (the plugin through
Ansible's own InventoryManager; the CLI's work as connect + list + JSON), and counts the HTTP
requests the plugin sends to fakepve: one login and one listing per URI, whatever the VM count.

    .venv/bin/python bench/ansible_inventory_bench.py [--guests 1000] [--nodes 4] [--runs 5] [--vcsim-vms 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import requests.adapters
from anyvirt_proxmox.testbed import FakePveTestbed
from anyvirt_vsphere.testbed.vcsim import Vcsim

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

_requests = [0]
_send = requests.adapters.HTTPAdapter.send


def _counting(self: requests.adapters.HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
    _requests[0] += 1
    return _send(self, request, *args, **kwargs)


def env_for(home: Path, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ANYVIRT_"))}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
        ANYVIRT_PASSWORD=password,
    )
    return env


#: ansible-inventory after importing anyvirt and the backends of the URIs' schemes: all the plugin
#: cannot avoid, without its listing and without a host to add
FLOOR = """
import sys
from anyvirt import registry
for scheme in sys.argv[2:]:
    registry.driver_for(scheme)
from ansible.cli.inventory import main
sys.argv = ["ansible-inventory", "-i", sys.argv[1], "--list"]
sys.exit(main())
"""


@attrs.frozen
class Took:
    wall: float
    cpu: float


def timed(argv: list[str], env: dict[str, str]) -> tuple[Took, str]:
    """Wall time, and the CPU time (user + system) of the process, which load inflates less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Took(wall, cpu), done.stdout


def cli_listing(uris: list[str], env: dict[str, str]) -> tuple[Took, int]:
    """One ``anyvirt vms --json`` over every URI (it lists several side by side), as the
    plugin lists them in one ``ansible-inventory``: one program start on each side."""
    took, out = timed([str(BIN / "anyvirt"), "vms", "--json", *uris], env)
    return took, len(json.loads(out))


def plugin_listing(inventory: Path, env: dict[str, str]) -> tuple[Took, int]:
    took, out = timed([str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"], env)
    return took, len(json.loads(out)["_meta"]["hostvars"])


def empty_listing(empty: Path, env: dict[str, str]) -> Took:
    return timed([str(BIN / "ansible-inventory"), "-i", str(empty), "--list"], env)[0]


def floor_listing(empty: Path, uris: list[str], env: dict[str, str]) -> Took:
    schemes = sorted({uri.split("://", 1)[0] for uri in uris})
    return timed([sys.executable, "-c", FLOOR, str(empty), *schemes], env)[0]


def in_process(inventory: Path, uris: list[str], password: str, runs: int) -> dict[str, Any]:
    """The same two listings inside this process, without either program's start: the plugin through
    Ansible's InventoryManager, the CLI's work as ``connect`` + ``vms.list()`` + JSON. Also the HTTP
    requests one plugin run sends to fakepve."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader

    import anyvirt

    os.environ["ANYVIRT_PASSWORD"] = password
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(REPO)
    init_plugin_loader([str(REPO)])
    from ansible.inventory.manager import InventoryManager

    def plugin() -> int:
        return len(InventoryManager(loader=DataLoader(), sources=[str(inventory)]).hosts)

    def cli() -> int:
        listed = 0
        for uri in uris:
            with anyvirt.connect(uri) as host:
                rows = [{"id": vm.id, "name": vm.name, "state": vm.state.value, "cpus": vm.cpus,
                         "memory_mib": vm.memory_mib, "node": vm.node} for vm in host.vms.list()]
                listed += len(json.loads(json.dumps(rows)))
        return listed

    requests.adapters.HTTPAdapter.send = _counting  # type: ignore[method-assign]
    try:
        before = _requests[0]
        hosts = plugin()
        sent = _requests[0] - before
    finally:
        requests.adapters.HTTPAdapter.send = _send  # type: ignore[method-assign]
    cli()
    times: dict[str, list[float]] = {"plugin": [], "cli": []}
    for _ in range(runs):
        for name, way in (("cli", cli), ("plugin", plugin)):
            started = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - started)
    ratios = [p / c for p, c in zip(times["plugin"], times["cli"], strict=True)]
    return {"hosts": hosts, "requests": sent, "plugin": statistics.median(times["plugin"]),
            "cli": statistics.median(times["cli"]), "pairwise": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vcsim-vms", type=int, default=0, help="a vCenter (vcsim) with this many VMs too")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="anyvirt-ansible-bench-") as tmp,
        FakePveTestbed(nodes=args.nodes, guests=args.guests) as pve,
    ):
        home = Path(tmp) / "home"
        (home / "tmp").mkdir(parents=True)
        uris = [pve.uri]
        sim = None
        if args.vcsim_vms:
            sim = Vcsim(
                vms=args.vcsim_vms, hosts=4, workdir=Path(tmp) / "vcsim", password=pve.password
            ).start()
            uris.append(sim.anyvirt_uri_with_ca)
        try:
            inventory = Path(tmp) / "lab.anyvirt.yml"
            inventory.write_text(
                "plugin: anyvirt.cloud.anyvirt\nuris:\n" + "".join(f'  - "{u}"\n' for u in uris),
                encoding="utf-8",
            )
            empty = Path(tmp) / "empty.yml"
            empty.write_text("all: {}\n", encoding="utf-8")
            env = env_for(home, pve.password)
            cli_listing(uris, env)  # warm-up: caches, .pyc files
            plugin_listing(inventory, env)
            floor_listing(empty, uris, env)
            runs: dict[str, list[Took]] = {"cli": [], "plugin": [], "empty": [], "floor": []}
            for _ in range(args.runs):  # taking turns, so that load falls on all alike
                cli, cli_vms = cli_listing(uris, env)
                plugin, plugin_vms = plugin_listing(inventory, env)
                assert plugin_vms == cli_vms, (plugin_vms, cli_vms)
                runs["cli"].append(cli)
                runs["plugin"].append(plugin)
                runs["empty"].append(empty_listing(empty, env))
                runs["floor"].append(floor_listing(empty, uris, env))
            inside = in_process(inventory, uris, pve.password, args.runs)
        finally:
            if sim is not None:
                sim.stop()
    print(f"URIs: {len(uris)}; VMs: {cli_vms}; runs: {args.runs} (medians; wall / CPU)")
    labels = {
        "cli": "anyvirt vms --json, every URI",
        "plugin": "ansible-inventory --list (the plugin)",
        "empty": "ansible-inventory --list, empty",
        "floor": "  the same after importing anyvirt",
    }
    for key, label in labels.items():
        wall = statistics.median(t.wall for t in runs[key])
        cpu = statistics.median(t.cpu for t in runs[key])
        print(f"  {label:40s} {wall * 1000:7.0f} ms / {cpu * 1000:5.0f} ms")
    for key, what in (("plugin", "plugin / CLI"), ("floor", "floor / CLI")):
        for clock in ("wall", "cpu"):
            pairs = zip(runs[key], runs["cli"], strict=True)
            ratios = [getattr(a, clock) / getattr(c, clock) for a, c in pairs]
            print(f"  {what} ({clock}): pairwise median {statistics.median(ratios):.2f}x; target <= 1.50x")
    print("In this process, without either program's start:")
    print(f"  connect + vms.list() + JSON            {inside['cli'] * 1000:8.0f} ms")
    print(f"  the plugin via InventoryManager        {inside['plugin'] * 1000:8.0f} ms")
    ratio = inside["plugin"] / inside["cli"]
    print(f"  plugin / CLI: {ratio:.2f}x (pairwise median {inside['pairwise']:.2f}x)")
    counted = "fixed: the login and one listing" if sim is None else "vSphere's SOAP not counted"
    print(f"  {inside['hosts']} hosts from {inside['requests']} HTTP requests to fakepve ({counted})")


if __name__ == "__main__":
    main()
