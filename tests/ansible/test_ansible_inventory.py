"""The inventory plugin, run by the real ansible-inventory over fakepve and vcsim at once: groups,
host variables, the password from a vault (never printed), and the cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible_support import BIN, ansible_env
from anyvirt_proxmox.testbed.fakepve import FakePveTestbed
from anyvirt_vsphere.testbed.vcsim import Vcsim

import anyvirt


def ansible_inventory(home: Path, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), *args, "--list"],
        env=ansible_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
        check=False,
    )


def vault_string(home: Path, vault_file: Path, secret: str) -> str:
    """``secret`` encrypted as a user would put it in an inventory file (``!vault |``)."""
    done = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(vault_file), secret],
        env=ansible_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def plain(value: Any) -> Any:
    """ansible-inventory marks text that came from the platform as unsafe (never templated, so a
    VM named ``{{ lookup(...) }}`` stays a name): ``{"__ansible_unsafe": text}`` in its JSON."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def listing(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0 and "[WARNING]" not in done.stderr, done.stdout + done.stderr
    return plain(json.loads(done.stdout))  # type: ignore[no-any-return]


def members(inventory: dict[str, Any], group: str) -> set[str]:
    return set(inventory.get(group, {}).get("hosts", []))


def test_two_platforms_grouped_with_hostvars_and_vaulted_password(
    proxmox_testbed: FakePveTestbed, vcsim_vcenter: Vcsim, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    vault_file = tmp_path / "vault-pass"
    vault_file.write_text("correct horse battery staple\n", encoding="utf-8")
    vaulted = vault_string(home, vault_file, proxmox_testbed.password)
    with anyvirt.connect(proxmox_testbed.uri, password=proxmox_testbed.password) as host:
        pve = {vm.name: vm.summary for vm in host.vms.list()}
    with anyvirt.connect(vcsim_vcenter.anyvirt_uri_with_ca, password=vcsim_vcenter.password) as host:
        vsphere = {vm.name: vm.summary for vm in host.vms.list()}
    assert pve and vsphere and not set(pve) & set(vsphere)

    inventory = tmp_path / "lab.anyvirt.yml"
    pve_password = "\n".join("      " + line for line in vaulted.split("\n", 1)[1].splitlines())
    inventory.write_text(
        f"""plugin: anyvirt.cloud.anyvirt
uris:
  - uri: "{proxmox_testbed.uri}"
    password: !vault |
{pve_password}
  - "{vcsim_vcenter.anyvirt_uri_with_ca}"
groups:
  big: anyvirt_memory_mib >= 1024
  vcsim_named: anyvirt_name is match('DC0_')
keyed_groups:
  - key: anyvirt_cpus | string
    prefix: cpus
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: {tmp_path / "cache"}
""",
        encoding="utf-8",
    )
    env_password = {"ANYVIRT_PASSWORD": vcsim_vcenter.password}  # the URIs without a password of their own

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(BIN / "ansible-inventory"),
                "-i",
                str(inventory),
                "--vault-password-file",
                str(vault_file),
                *args,
                "--list",
            ],
            env=ansible_env(home, **env_password),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=home,
            check=False,
        )

    done = run()
    found = listing(done)
    assert proxmox_testbed.password not in done.stdout + done.stderr
    assert vcsim_vcenter.password not in json.dumps(found["_meta"])
    hostvars = found["_meta"]["hostvars"]
    assert set(hostvars) == set(pve) | set(vsphere)
    assert members(found, "anyvirt_backend_proxmox") == set(pve)
    assert members(found, "anyvirt_backend_vsphere") == set(vsphere)
    for name, summary in {**pve, **vsphere}.items():
        facts = hostvars[name]
        assert (
            facts["anyvirt_id"],
            facts["anyvirt_state"],
            facts["anyvirt_cpus"],
            facts["anyvirt_memory_mib"],
            facts["anyvirt_node"],
        ) == (summary.id, summary.state.value, summary.cpus, summary.memory_mib, summary.node)
        assert name in members(found, f"anyvirt_state_{summary.state.value}")
        assert name in members(found, f"cpus_{summary.cpus}")
        assert "ansible_host" not in facts  # addresses are opt-in
    nodes = {s.node for s in pve.values()}
    assert len(nodes) > 1
    for node in nodes:
        assert members(found, f"anyvirt_node_{node}") == {n for n, s in pve.items() if s.node == node}
    assert members(found, "big") == {n for n, s in {**pve, **vsphere}.items() if s.memory_mib >= 1024}
    assert members(found, "vcsim_named") == {n for n in vsphere if n.startswith("DC0_")} != set()

    # the cache serves the next run: without credentials it still answers, from the cache alone,
    # and without importing anyvirt (its import costs about as much as Ansible's own start)
    env_password.clear()
    env_password["PYTHONPROFILEIMPORTTIME"] = "1"
    cached = run()
    assert listing(cached)["_meta"]["hostvars"] == hostvars
    lines = cached.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert "ansible.cli.inventory" in imported and "anyvirt" not in imported
    cache_text = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "cache").iterdir())
    assert proxmox_testbed.password not in cache_text


def test_memory_uri_is_refused_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    inventory = tmp_path / "mem.anyvirt.yml"
    inventory.write_text("plugin: anyvirt.cloud.anyvirt\nuris: ['memory://lab']\n", encoding="utf-8")
    done = ansible_inventory(home, inventory)
    assert "memory:// lives in one process" in done.stdout + done.stderr


@pytest.mark.parametrize("secret", ["hunter2-never-printed"])
def test_a_wrong_password_fails_without_printing_it(
    proxmox_testbed: FakePveTestbed, tmp_path: Path, secret: str
) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    inventory = tmp_path / "bad.anyvirt.yml"
    inventory.write_text(
        f'plugin: anyvirt.cloud.anyvirt\nuris:\n  - uri: "{proxmox_testbed.uri}"\n    password: {secret}\n',
        encoding="utf-8",
    )
    done = ansible_inventory(home, inventory, "-vvv")
    assert "anyvirt:" in done.stdout + done.stderr  # anyvirt's own message
    assert secret not in done.stdout + done.stderr
