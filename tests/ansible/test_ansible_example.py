"""docs/ansible.md's worked example: its playbook, as written, deploys from a template on two
platforms (vcsim and fakepve here) with --forks 10, ten clones at a time. (Second runs and check
mode are proven by test_ansible_playbooks.py; one run here keeps the suite short.) The docs show
the example's files verbatim."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from ansible_support import COLLECTION, REPO, run_playbook
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt

EXAMPLE = COLLECTION / "docs" / "example"
PER_PLATFORM = 4  # the docs deploy ten; four keep the test short with the same parallelism


def test_the_docs_show_the_example_files_verbatim() -> None:
    page = (REPO / "docs" / "ansible.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.DOTALL)
    for name in ("inventory.yml", "deploy.yml"):
        assert (EXAMPLE / name).read_text(encoding="utf-8") in blocks, name


@pytest.mark.timeout(900)
def test_the_example_deploys_on_two_platforms_in_parallel(
    vcsim_vcenter: Vcsim, proxmox_testbed: FakePveTestbed, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    tag = uuid.uuid4().hex[:6]
    platforms = {
        "kvm": (vcsim_vcenter.anyvirt_uri_with_ca, vcsim_vcenter.password),  # the docs' KVM, here a vCenter
        "pve": (proxmox_testbed.uri, proxmox_testbed.password),
    }
    templates = {}
    for group, (uri, password) in platforms.items():
        with anyvirt.connect(uri, password=password) as host:
            templates[group] = next(
                vm.name
                for vm in host.vms.list()
                if vm.state is anyvirt.PowerState.STOPPED or host.backend == "vsphere"
            )
    inventory = home / "inventory.yml"
    lines = [
        "all:",
        "  vars:",
        "    ops_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops",
        "  children:",
    ]
    for group, (uri, password) in platforms.items():
        lines += [
            f"    {group}:",
            "      hosts:",
            f"        web-{tag}-{group}-[01:{PER_PLATFORM:02d}]:",
            "      vars:",
            f'        anyvirt_uri: "{uri}"',
            f'        anyvirt_password: "{password}"',
            f'        template: "{templates[group]}"',
            "        ansible_connection: local",
        ]
    lines += ["    ungrouped:", "      hosts:", "        localhost:", "          ansible_connection: local"]
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    inventory.chmod(0o600)
    options = ("--forks", "10", "-e", "wait_ready=false", "-e", "linked=false")
    try:
        first = run_playbook(EXAMPLE / "deploy.yml", home, inventory, *options)
        assert first.returncode == 0 and first.failed == 0, first.output[-8000:]
        assert len(first.recap) == 2 * PER_PLATFORM
        assert all(counts["changed"] == 1 for counts in first.recap.values()), first.output[-4000:]
        for group, (uri, password) in platforms.items():
            with anyvirt.connect(uri, password=password) as host:
                made = sorted(vm.name for vm in host.vms.list() if vm.name.startswith(f"web-{tag}-{group}-"))
            assert made == [f"web-{tag}-{group}-{i:02d}" for i in range(1, PER_PLATFORM + 1)]
    finally:
        for uri, password in platforms.values():
            with anyvirt.connect(uri, password=password) as host:
                for vm in host.vms.list():
                    if vm.name.startswith(f"web-{tag}-"):
                        vm.delete(disks=True)
