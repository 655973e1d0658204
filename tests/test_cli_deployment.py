"""``anyvirt vm clone --count --ssh-key --wait-ready``, ``vm addresses``, and addresses in
``vm show`` and ``vms --json --addresses``, against memory:// hosts in process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import run, run_json

import anyvirt
from anyvirt import NicSpec, VMSpec, memory

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@cli"


@pytest.fixture
def uri() -> Iterator[str]:
    name = f"clidep-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    memory.reset(name)


@pytest.fixture
def host(uri: str) -> Iterator[anyvirt.Host]:
    with anyvirt.connect(uri) as connected:
        yield connected


def test_bulk_clone_with_a_key_and_wait_ready(uri: str, host: anyvirt.Host, tmp_path: Path) -> None:
    host.vms.create(VMSpec(name="tmpl", nics=[NicSpec()])).mark_template()
    key = tmp_path / "id.pub"
    key.write_text(f"# my key\n{KEY}\n")
    made = run_json("vm", "clone", uri, "tmpl", "web", "--linked", "--count", "3",
                    "--concurrency", "2", "--ssh-key", str(key), "--user", "ops", "--wait-ready")
    assert [entry["vm"]["name"] for entry in made] == ["web-1", "web-2", "web-3"]
    assert all(entry["vm"]["state"] == "running" and entry["addresses"] for entry in made)
    for entry in made:
        seed = host.driver.read_identity(entry["vm"]["id"])
        assert seed is not None and f"local-hostname: {entry['vm']['name']}" in seed["meta-data"]
        assert "name: ops" in seed["user-data"] and KEY.split()[1] in seed["user-data"]


def test_a_key_file_without_a_key_is_a_usage_error(uri: str, host: anyvirt.Host,
                                                    tmp_path: Path) -> None:
    host.vms.create(VMSpec(name="src"))
    empty = tmp_path / "empty.pub"
    empty.write_text("# nothing\n")
    result = run("vm", "clone", uri, "src", "web", "--ssh-key", str(empty))
    assert result.exit_code != 0 and "no public key" in result.output + result.stderr
    assert [vm.name for vm in host.vms.list()] == ["src"]


def test_addresses_in_vm_addresses_show_and_vms(uri: str, host: anyvirt.Host) -> None:
    vm = host.vms.create(VMSpec(name="web1", nics=[NicSpec()]))
    assert run_json("vm", "addresses", uri, "web1") == []
    vm.start()
    (address,) = run_json("vm", "addresses", uri, "web1")
    assert address["mac"] == vm.info().nics[0].mac and address["source"] == "lease"
    assert run_json("vm", "show", uri, "web1")["addresses"] == [address]
    shown = run("vm", "show", uri, "web1")
    assert address["ip"] in shown.stdout
    listed = run_json("vms", uri)
    assert "addresses" not in listed[0], "a listing costs no call per VM unless asked"
    assert run_json("vms", uri, "--addresses")[0]["addresses"] == [address]


def test_vm_show_has_no_addresses_where_the_connection_has_none(uri: str) -> None:
    limited = f"{uri}?without=guest.addresses"
    with anyvirt.connect(limited) as host:
        host.vms.create(VMSpec(name="web1", nics=[NicSpec()])).start()
    assert "addresses" not in run_json("vm", "show", limited, "web1")
