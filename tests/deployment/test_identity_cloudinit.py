"""The generated seeds, read by Debian's real cloud-init (22.4 in bookworm), without booting.

NoCloud: the ISO's volume id is read by xorriso, its files extracted by xorriso (as the
guest's kernel would see them through Rock Ridge), then read by cloud-init's own
``util.read_seeded`` and by ``DataSourceNoCloud`` itself (on a seed directory holding
those files: it reads them as it reads a mounted ``cidata`` device), the user-data
checked by ``cloud-init schema`` and split into parts by cloud-init's user-data
processor, and the network-config parsed by cloud-init's network state parser.
vSphere: the guestinfo values decoded by ``DataSourceVMware.decode`` and
``load_json_or_yaml``/``process_metadata``, as the VMware datasource does.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deployment_support import make_key, run_debian_python

from anyvirt.deployment import (
    Dhcp,
    Identity,
    ResolvedIdentity,
    Static,
    User,
    compile_nocloud,
    seed_iso,
    write_seed_iso,
)
from anyvirt.deployment.documents import cloud_config, meta_data, network_config
from anyvirt.deployment.vsphere import GUESTINFO_VALUE_MAX, compile_vsphere
from anyvirt.errors import InvalidSpec

SHA512 = ("$6$DuM2dErhbRcRo9fz$ktJUM6f.5fTIXP6YBtkNSXZT7qMAgXbmqCMTTKtO4uORubvipLJG8WmddXsjQA1zkaz"
          "ySiprtlWH2aO.1zGIm/")
MACS = ["52:54:00:12:34:01", "52:54:00:12:34:02"]
HOSTILE_TEXT = ("line one\n#cloud-config\nhostname: evil\n---\n&a *a {{ v1.instance_id }} "
                "\u2028sep\u2029 \x85nel 'q' \"d\" \\ : # \t tab \0nul")
USER_DATA = (
    "#cloud-config\n"
    "users: [default]\n"
    "packages: [nginx]\n"
    "write_files:\n"
    "- path: /etc/motd\n"
    f"  content: {json.dumps(HOSTILE_TEXT)}\n"  # a JSON string is a YAML double-quoted scalar
)


def _cases() -> dict[str, tuple[ResolvedIdentity, list[str]]]:
    ops = User("ops", ssh_keys=[make_key(), make_key("ssh-rsa", comment="")], sudo=True,
               password_hash=SHA512)
    hostile_key = make_key("ecdsa-sha2-nistp256", comment="x: y #cloud-config &a *a [1] {k: v} 'q' \"d\"")
    return {
        "minimal": (Identity().resolve("web1", "iid-minimal"), []),
        "users": (Identity(users=[ops, User("audit", ssh_keys=[hostile_key])]).resolve("app-2", "iid-u"),
                  MACS[:1]),
        "static": (Identity(users=[ops], network=[
            Dhcp(), Static(["192.0.2.10/24", "2001:db8::5/64"], gateway="192.0.2.1",
                           gateway6="2001:db8::1", nameservers=["192.0.2.53", "2001:db8::53"],
                           search=["example.com", "corp.example"])]).resolve("db", "iid-static"), MACS),
        "fqdn and user_data": (Identity(users=[ops], hostname="api.example.com",
                                        user_data=USER_DATA).resolve("api", "iid-ud"), MACS[:1]),
    }


CASES = _cases()

READ_BACK = r'''
import json, os, shutil, sys
from cloudinit import distros, util
from cloudinit.handlers import type_from_starts_with
from cloudinit.helpers import Paths
from cloudinit.net.network_state import parse_net_config_data
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud
out = {}
for name, folder in json.load(sys.stdin).items():
    md, ud, vd = util.read_seeded(folder + "/")
    # the datasource itself, on a seed directory holding the ISO's files
    cloud_dir = folder + ".cloud"
    shutil.copytree(folder, os.path.join(cloud_dir, "seed", "nocloud"))
    paths = Paths({"cloud_dir": cloud_dir, "run_dir": cloud_dir + "/run"})
    ds = DataSourceNoCloud({}, distros.fetch("debian")("debian", {}, paths), paths)
    claimed = ds._get_data()
    parts = [(part.get_content_type(), util.decode_binary(part.get_payload(decode=True)))
             for part in ds.get_userdata().walk() if not part.is_multipart()]
    state = parse_net_config_data(ds.network_config)
    text = util.decode_binary(ud)
    out[name] = {"meta": md, "user_data": text, "type": type_from_starts_with(text),
                 "cloud_config": util.load_yaml(text), "vendor": vd,
                 "claimed": claimed, "ds_meta": ds.metadata, "instance_id": ds.get_instance_id(),
                 "hostname": ds.get_hostname().hostname, "parts": parts,
                 "network": ds.network_config,
                 "interfaces": [{"mac": i.get("mac_address"), "name": i["name"], "subnets": i["subnets"]}
                                for i in state.iter_interfaces()]}
print(json.dumps(out))
'''


def _volume_id(iso: Path) -> str:
    done = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True,
                          check=True)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Volume Id")]
    assert lines, done.stdout + done.stderr
    return lines[0].split(":", 1)[1].strip()


@pytest.fixture(scope="module")
def read_back(debian_cloud_init: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case's seed ISO written, checked and extracted; then read by cloud-init."""
    folders = {}
    for index, (name, (resolved, macs)) in enumerate(CASES.items()):
        work = tmp_path_factory.mktemp(f"seed{index}")
        iso = work / "seed.iso"
        iso.write_bytes(seed_iso(compile_nocloud(resolved, macs)))
        assert _volume_id(iso) == "cidata"
        files = work / "files"
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(files)],
                       capture_output=True, check=True)
        assert sorted(p.name for p in files.iterdir()) == ["meta-data", "network-config", "user-data"]
        schema = subprocess.run([debian_cloud_init, "schema", "--config-file", str(files / "user-data")],
                                capture_output=True, text=True)
        assert schema.returncode == 0, (name, schema.stdout, schema.stderr)
        folders[name] = str(files)
    return dict(run_debian_python(READ_BACK, folders))


@pytest.mark.parametrize("case", sorted(CASES))
def test_nocloud_seed_read_by_cloud_init(read_back: dict[str, Any], case: str) -> None:
    resolved, macs = CASES[case]
    seen = read_back[case]
    seed = compile_nocloud(resolved, macs)
    assert seen["meta"] == meta_data(resolved)
    assert seen["meta"]["local-hostname"] == resolved.hostname
    assert seen["meta"]["instance-id"] == resolved.instance_id
    assert seen["user_data"] == seed.user_data
    assert seen["type"] == "text/cloud-config"
    # DataSourceNoCloud claims the seed and reports the identity as the guest would see it
    assert seen["claimed"] is True
    assert seen["ds_meta"] == {**meta_data(resolved), "dsmode": "net"}
    assert seen["instance_id"] == resolved.instance_id
    assert seen["hostname"] == resolved.short_hostname
    assert seen["parts"] == [["text/cloud-config", seed.user_data]]
    assert seen["vendor"] is None
    assert seen["cloud_config"] == cloud_config(resolved)
    assert seen["network"] == network_config(resolved, macs)
    users = {u["name"]: u for u in seen["cloud_config"].get("users", []) if isinstance(u, dict)}
    for user in resolved.identity.users:
        assert users[user.name].get("ssh_authorized_keys", []) == list(user.ssh_keys)
        assert ("sudo" in users[user.name]) is user.sudo
        hashed = user.password_hash.reveal() if user.password_hash is not None else None
        assert users[user.name].get("hashed_passwd") == hashed
    interfaces = seen["interfaces"]
    if not macs:  # DHCP on every Ethernet NIC, matched by name
        assert [i["subnets"][0]["type"] for i in interfaces] == ["dhcp4"]
    else:
        assert [i["mac"] for i in interfaces] == macs


def test_static_nic_as_cloud_init_understands_it(read_back: dict[str, Any]) -> None:
    nic0, nic1 = read_back["static"]["interfaces"]
    assert [s["type"] for s in nic0["subnets"]] == ["dhcp4"]
    v4, v6 = nic1["subnets"]
    assert (v4["address"], v4["prefix"], v4["gateway"]) == ("192.0.2.10", 24, "192.0.2.1")
    assert (v6["address"], v6["prefix"], v6["gateway"]) == ("2001:db8::5", 64, "2001:db8::1")
    assert v4["dns_nameservers"] == ["192.0.2.53", "2001:db8::53"]
    assert v4["dns_search"] == ["example.com", "corp.example"]
    assert v4["routes"] == [] and v6["routes"] == []  # the default routes are the gateways


def test_hostile_values_reach_the_guest_as_data(read_back: dict[str, Any]) -> None:
    seen = read_back["fqdn and user_data"]["cloud_config"]
    assert seen["hostname"] == "api" and seen["fqdn"] == "api.example.com"
    assert seen["write_files"][0]["content"] == HOSTILE_TEXT
    assert seen["users"][0] == "default" and seen["users"][1]["name"] == "ops"
    audit = next(u for u in read_back["users"]["cloud_config"]["users"] if u["name"] == "audit")
    assert audit["ssh_authorized_keys"][0].endswith("x: y #cloud-config &a *a [1] {k: v} 'q' \"d\"")
    assert "sudo" not in audit


# ---------------------------------------------------------------- the ISO itself


def test_seed_iso_is_deterministic_across_time_zones() -> None:
    resolved, macs = CASES["static"]
    first = seed_iso(compile_nocloud(resolved, macs))
    assert seed_iso(compile_nocloud(resolved, macs)) == first
    script = ("import hashlib, sys\n"
              "from anyvirt.deployment import Identity, compile_nocloud, seed_iso\n"
              "from anyvirt.deployment.identity import ResolvedIdentity\n"
              f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from test_identity_cloudinit import CASES\n"
              "r, m = CASES['static']\n"
              "print(hashlib.sha256(seed_iso(compile_nocloud(r, m))).hexdigest())\n")
    for zone in ("Pacific/Kiritimati", "America/St_Johns"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env={**os.environ, "TZ": zone})
        assert done.stdout.strip() == hashlib.sha256(first).hexdigest(), zone


def test_seeds_of_two_clones_differ_only_in_their_identity() -> None:
    spec = Identity(users=[User("ops", ssh_keys=[make_key()], sudo=True)])
    one, two = (compile_nocloud(spec.resolve(name, f"iid-{name}")) for name in ("web-1", "web-2"))
    assert one.user_data.replace("web-1", "web-2") == two.user_data
    assert one.meta_data != two.meta_data
    assert seed_iso(one) != seed_iso(two)


# ---------------------------------------------------------------- vSphere guestinfo

DECODE = r'''
import json, sys
from cloudinit.sources.DataSourceVMware import decode, load_json_or_yaml, process_metadata
out = {}
for name, config in json.load(sys.stdin).items():
    md = process_metadata(load_json_or_yaml(decode("metadata", config["guestinfo.metadata.encoding"],
                                                   config["guestinfo.metadata"])))
    ud = decode("userdata", config["guestinfo.userdata.encoding"], config["guestinfo.userdata"])
    out[name] = {"meta": md, "user_data": ud}
print(json.dumps(out))
'''


def test_vsphere_guestinfo_decoded_by_the_vmware_datasource(debian_cloud_init: str) -> None:
    configs = {name: compile_vsphere(resolved, macs) for name, (resolved, macs) in CASES.items()}
    for config in configs.values():
        assert sorted(config) == ["guestinfo.metadata", "guestinfo.metadata.encoding",
                                  "guestinfo.userdata", "guestinfo.userdata.encoding"]
        assert config["guestinfo.userdata.encoding"] == "gzip+base64"
        assert all(len(value) <= GUESTINFO_VALUE_MAX for value in config.values())
    seen = run_debian_python(DECODE, configs)
    for name, (resolved, macs) in CASES.items():
        assert seen[name]["meta"] == {**meta_data(resolved),
                                      "network": {"config": network_config(resolved, macs)}}
        assert seen[name]["user_data"] == compile_nocloud(resolved, macs).user_data
    assert compile_vsphere(*CASES["static"]) == configs["static"]  # deterministic


def test_vsphere_size_limit() -> None:
    def with_payload(size: int) -> Identity:
        blob = base64.b64encode(os.urandom(size)).decode()  # random: gzip cannot shrink it much
        return Identity(user_data=f"#cloud-config\nwrite_files:\n- path: /x\n  content: {blob}\n")
    fits = compile_vsphere(with_payload(30_000).resolve("web1", "iid-1"))
    assert len(fits["guestinfo.userdata"]) <= GUESTINFO_VALUE_MAX
    with pytest.raises(InvalidSpec) as caught:
        compile_vsphere(with_payload(50_000).resolve("web1", "iid-1"))
    assert caught.value.field == "user_data" and "65536" in str(caught.value)
    compile_nocloud(with_payload(50_000).resolve("web1", "iid-1"))  # NoCloud has no such limit


def test_seed_written_to_a_stream_that_cannot_seek() -> None:
    class Upload(io.RawIOBase):  # what a platform's upload stream offers: write, nothing else
        def __init__(self) -> None:
            self.received = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.received += bytes(data)
            return len(data)

    seed = compile_nocloud(*CASES["users"])
    upload = Upload()
    assert write_seed_iso(seed.files(), upload) == len(upload.received)  # type: ignore[arg-type]
    assert bytes(upload.received) == seed_iso(seed)
    with pytest.raises(ValueError, match="not NoCloud seed files"):
        write_seed_iso({"../etc/passwd": b""}, io.BytesIO())


def test_compiled_seeds_keep_the_password_hash_out_of_their_repr() -> None:
    resolved, macs = CASES["users"]
    seed = compile_nocloud(resolved, macs)
    assert SHA512 in seed.user_data
    assert SHA512 not in repr(seed) and SHA512 not in repr(resolved)
