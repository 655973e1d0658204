"""Proxmox's native cloud-init keys, checked against the official PVE API schema
(fakepve's ``pve-api.json.gz``, read by backends/proxmox/tests/pve_schema_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from deployment_support import make_key

from anyvirt.deployment import Dhcp, Identity, Static, User, compile_proxmox
from anyvirt.target import Secret

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backends" / "proxmox" / "tests"))
from pve_schema_support import check_request

CONFIG_URL = "/api2/json/nodes/pve1/qemu/100/config"
SHA512 = ("$6$DuM2dErhbRcRo9fz$ktJUM6f.5fTIXP6YBtkNSXZT7qMAgXbmqCMTTKtO4uORubvipLJG8WmddXsjQA1zkaz"
          "ySiprtlWH2aO.1zGIm/")
YESCRYPT = "$y$j9T$abcdefghijklmnop$wRwvHNqzMkHLG74uLLCRVTwaZ.a1aIothEUeYGf9oED"
BCRYPT_2B = "$2b$12$IZy6rC/wYhqU6v2wegR3Beg0i90A/FmusCxRiWFW.X40aBn0qEK0m"
KEYS = [make_key(comment="ops@laptop"), make_key("ssh-rsa", comment="a+b=c&d%20e #f ~!*'() é"),
        make_key("ecdsa-sha2-nistp384", comment="")]


def schema_errors(params: dict[str, str | Secret]) -> list[str]:
    """The schema's complaints about ``params`` as sent (a Secret revealed)."""
    return check_request("PUT", CONFIG_URL, {
        key: value.reveal() if isinstance(value, Secret) else value for key, value in params.items()})


def test_native_keys_carry_a_whole_identity() -> None:
    spec = Identity(users=[User("ops", ssh_keys=KEYS, sudo=True, password_hash=SHA512)], network=[
        Dhcp(), Static(["192.0.2.10/24", "2001:db8::5/64"], gateway="192.0.2.1", gateway6="2001:db8::1",
                       nameservers=["192.0.2.53", "2001:db8::53"], search=["example.com", "corp.example"]),
        Static(["198.51.100.7/25"], nameservers=["192.0.2.53", "2001:db8::53"])])
    compiled = compile_proxmox(spec.resolve("web1", "iid-1"), "web1", nic_count=4)
    assert compiled.needs_snippets == ()
    assert compiled.params == {
        "ciuser": "ops", "cipassword": Secret(SHA512), "sshkeys": compiled.params["sshkeys"],
        "ipconfig0": "ip=dhcp",
        "ipconfig1": "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::5/64,gw6=2001:db8::1",
        "ipconfig2": "ip=198.51.100.7/25", "ipconfig3": "ip=dhcp",
        "nameserver": "192.0.2.53 2001:db8::53", "searchdomain": "example.com corp.example"}
    assert unquote(compiled.params["sshkeys"]) == "\n".join(KEYS)
    assert SHA512 not in repr(compiled) and "'cipassword': '***'" in repr(compiled)
    assert schema_errors(compiled.params) == []


def test_sshkeys_are_url_encoded_the_way_pve_wants() -> None:
    params = compile_proxmox(Identity(users=[User("ops", ssh_keys=KEYS, sudo=True)]).resolve(
        "web1", "iid-1"), "web1", 1).params
    assert "+" not in params["sshkeys"] and " " not in params["sshkeys"]
    assert "%20" in params["sshkeys"] and "%0A" in params["sshkeys"]
    # the check can fail: the same keys unencoded break PVE's urlencoded format
    assert schema_errors({"sshkeys": "\n".join(KEYS)}) != []


def test_the_schema_check_knows_the_cloud_init_formats() -> None:
    assert schema_errors({"ipconfig0": "ip=dhcp,gw=192.0.2.1"}) != []
    assert schema_errors({"ipconfig0": "ip=192.0.2.10,gw=192.0.2.1"}) != []
    assert schema_errors({"ipconfig0": "ip=192.0.2.10/24,gw6=2001:db8::1"}) != []
    assert schema_errors({"ipconfig0": "ip=192.0.2.10/24\nhostname=evil"}) != []
    assert schema_errors({"nameserver": "dns.example.com"}) != []
    assert schema_errors({"cicustom": "user=local:snippets/web1.yaml"}) == []


def test_a_vm_name_in_capitals_is_its_own_host_name() -> None:
    assert compile_proxmox(Identity().resolve("Web1", "iid-1"), "Web1", 1).needs_snippets == ()


def test_no_users_no_user_keys() -> None:
    compiled = compile_proxmox(Identity().resolve("web1", "iid-1"), "web1", 1)
    assert compiled.params == {"ipconfig0": "ip=dhcp"}
    assert compiled.needs_snippets == ()


@pytest.mark.parametrize(("spec", "vm_name", "reason"), [
    (Identity(user_data="#cloud-config\npackages: [nginx]\n"), "web1", "user_data"),
    (Identity(users=[User("ops", sudo=True), User("audit")]), "web1", "2 users"),
    (Identity(users=[User("ops")]), "web1", "sudo"),
    (Identity(users=[User("ops", sudo=True, password_hash=YESCRYPT)]), "web1", "hash this password"),
    (Identity(users=[User("ops", sudo=True, password_hash=BCRYPT_2B)]), "web1", "hash this password"),
    (Identity(hostname="api.example.com"), "web1", "names the guest after the VM"),
    (Identity(instance_id="iid-fixed"), "web1", "instance id"),
    (Identity(network=[Static(["192.0.2.10/24", "192.0.2.11/24"])]), "web1", "2 IPv4 addresses"),
    (Identity(network=[Static(["192.0.2.10/24"], nameservers=["192.0.2.53"]),
                       Static(["198.51.100.7/25"], nameservers=["198.51.100.53"])]), "web1", "name servers"),
])
def test_what_needs_a_snippet_says_why(spec: Identity, vm_name: str, reason: str) -> None:
    compiled = compile_proxmox(spec.resolve(vm_name, "iid-1"), vm_name, nic_count=2)
    assert any(reason in why for why in compiled.needs_snippets), compiled.needs_snippets
    assert schema_errors(compiled.params) == []  # what is set natively is still well-formed


@pytest.mark.parametrize("password_hash", [YESCRYPT, BCRYPT_2B])
def test_hashes_pve_would_hash_again_are_never_sent(password_hash: str) -> None:
    spec = Identity(users=[User("ops", sudo=True, password_hash=password_hash)])
    assert "cipassword" not in compile_proxmox(spec.resolve("web1", "iid-1"), "web1", 1).params
