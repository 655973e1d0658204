"""The schema check itself: it must catch what fakepve lets through."""

from __future__ import annotations

import pytest
from pve_schema_support import check_request, load

BASE = "https://127.0.0.1:8006/api2/json"


def test_the_official_schema_is_read() -> None:
    paths = load()
    assert len(paths) == 449
    assert sum(len(methods) for methods in paths.values()) == 680


@pytest.mark.parametrize(("method", "path", "body", "complaint"), [
    ("GET", "/cluster/resources?type=bogus", None, "not one of"),  # fakepve answers 200
    ("GET", "/nodes/pve1/qemu/100/no-such", None, "no such path"),
    ("PATCH", "/nodes/pve1/qemu/100/config", None, "no such method"),
    ("POST", "/nodes/pve1/qemu", "vmid=100&colour=red", "unknown parameter 'colour'"),
    ("POST", "/nodes/pve1/qemu", "name=web1", "required parameter 'vmid' missing"),
    ("POST", "/nodes/pve1/qemu", "vmid=99", "below the minimum"),
    ("POST", "/nodes/pve1/qemu", "vmid=100&cores=two", "not an integer"),
    ("POST", "/nodes/pve1/qemu", "vmid=100&name=web_1", "DNS name"),
    ("POST", "/nodes/pve1/qemu", "vmid=100&net0=virtio%2Cbrige%3Dvmbr0", "unknown key 'brige'"),
    ("POST", "/nodes/pve1/qemu", "vmid=100&net0=virtio%3D01%3A00%3A00%3A00%3A00%3A01", "unicast MAC"),
    ("POST", "/nodes/pve1/qemu/100/snapshot", "snapname=1st", "config id"),
    ("POST", "/nodes/pve1/qemu/100/status/shutdown", "timeout=-1", "below the minimum"),
    ("POST", "/nodes/pve1/qemu/100/migrate", "target=pve2&online=maybe", "not a boolean"),
])
def test_violations_are_found(method: str, path: str, body: str | None, complaint: str) -> None:
    found = check_request(method, BASE + path, body)
    assert any(complaint in v for v in found), found


def test_conforming_requests_pass() -> None:
    create = ("vmid=100&name=web1&cores=2&memory=256&scsi0=local-lvm%3A0.0625&scsihw=virtio-scsi-single"
              "&net0=e1000%3DBC%3A24%3A11%3A00%3A00%3A01%2Cbridge%3Dvmbr0")
    assert check_request("POST", BASE + "/nodes/pve1/qemu", create) == []
    delete = "/nodes/pve1/qemu/100?purge=1&destroy-unreferenced-disks=1"
    assert check_request("DELETE", BASE + delete, None) == []


def test_secrets_are_not_shown() -> None:
    found = check_request("POST", BASE + "/access/ticket", "username=root%40pam&password=hunter2&colour=1")
    assert found and not any("hunter2" in v for v in found)
