"""URIs, backend discovery, credentials, profiles: and no secret ever shows."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import anyvirt
from anyvirt import plugins, registry
from anyvirt.connect import build_target
from anyvirt.errors import InvalidSpec, NotFound
from anyvirt.target import Secret

SECRET = "s3cr3t-Pa55word!"


@pytest.mark.parametrize(
    "uri",
    ["", "web1", "memory:/x", "://host", "libvirt++qemu:///system", "vsphere://h:notaport/"],
)
def test_malformed_uris(uri: str) -> None:
    with pytest.raises(InvalidSpec):
        anyvirt.connect(uri or "nothing")


def test_unknown_scheme_names_installed_backends_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a machine without anyvirt-proxmox: its entry point and any loaded driver gone
    installed = plugins.entry_points_of(registry.GROUP)
    monkeypatch.setattr(registry, "entry_points_of",
                        lambda group: {k: v for k, v in installed.items() if k != "proxmox"})
    monkeypatch.delitem(registry._registered, "proxmox", raising=False)
    with pytest.raises(registry.UnknownBackend) as info:
        anyvirt.connect("proxmox://root%40pam@pve1:8006")
    message = str(info.value)
    assert "memory" in message
    assert "anyvirt[proxmox]" in message
    assert isinstance(info.value, NotFound)
    assert isinstance(info.value, InvalidSpec)
    with pytest.raises(registry.UnknownBackend, match="installed: "):
        anyvirt.connect("teleport://x")


def test_target_pieces() -> None:
    t = build_target("vsphere://admin@vc.example.com:8443/sdk?verify=false&timeout=12&datacenter=DC0")
    assert (t.scheme, t.backend, t.transport) == ("vsphere", "vsphere", "")
    assert (t.host, t.port, t.path) == ("vc.example.com", 8443, "/sdk")
    assert t.verify is False
    assert t.timeout == 12
    assert dict(t.query) == {"datacenter": "DC0"}
    assert t.credentials.username == "admin"
    t2 = build_target("libvirt+qemu+ssh://root@kvm1/system")
    assert (t2.backend, t2.transport, t2.host, t2.path) == ("libvirt", "qemu+ssh", "kvm1", "/system")
    assert build_target("esxi://root@esx1").verify is True, "TLS is verified unless turned off"


def test_bad_option_values() -> None:
    with pytest.raises(InvalidSpec, match="verify"):
        build_target("vsphere://vc?verify=perhaps")
    with pytest.raises(InvalidSpec, match="timeout"):
        build_target("vsphere://vc?timeout=-1")
    with pytest.raises(InvalidSpec, match="timeout"):
        build_target("vsphere://vc", timeout=0)


def test_precedence_keyword_then_uri_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYVIRT_USERNAME", "envuser")
    monkeypatch.setenv("ANYVIRT_PASSWORD", "envpass")
    t = build_target("vsphere://uriuser@vc")
    assert t.credentials.username == "uriuser"
    assert t.credentials.password == Secret("envpass")
    t = build_target("vsphere://uriuser@vc", username="kw", password="kwpass")
    assert t.credentials.username == "kw"
    assert t.credentials.password is not None
    assert t.credentials.password.reveal() == "kwpass"


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = build_target(f"vsphere://admin:{SECRET}@vc.example.com", token=SECRET + "tok")
    for text in (repr(t), str(t), t.safe_uri, repr(t.credentials), str(t.credentials.password)):
        assert SECRET not in text
    monkeypatch.setenv("ANYVIRT_PASSWORD", SECRET)
    with anyvirt.connect("memory://secrets?nodes=1") as host:  # the ambient one is left alone
        assert SECRET not in repr(host) and SECRET not in host.uri
    with pytest.raises(InvalidSpec, match="takes no password") as refused:
        anyvirt.connect("memory://secrets?nodes=1", password=SECRET + "-given")
    assert SECRET not in str(refused.value)
    with pytest.raises(anyvirt.AnyvirtError) as info:
        anyvirt.connect(f"teleport://admin:{SECRET}@h")
    assert SECRET not in str(info.value)
    with pytest.raises(InvalidSpec) as info2:
        anyvirt.connect(f"vsphere://admin:{SECRET}@h:99999999")
    assert SECRET not in str(info2.value)
    assert SECRET not in caplog.text
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret(SECRET))


def test_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[profiles.lab]\nuri = "memory://profiled"\nusername = "ops"\npassword_env = "LAB_PW"\n'
        '[profiles.bad]\nuri = "memory://x"\ncolour = "blue"\n'
        '[profiles.bare]\nuri = "memory://profiled"\nusername = "ops"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("ANYVIRT_CONFIG", str(config))
    monkeypatch.setenv("LAB_PW", SECRET)
    t = build_target(profile="lab")
    assert t.credentials.username == "ops"
    assert t.credentials.password == Secret(SECRET)
    with pytest.raises(InvalidSpec, match="takes no password"):  # memory:// logs nobody in
        anyvirt.connect(profile="lab")
    with anyvirt.connect(profile="bare") as host:
        assert host.uri == "memory://profiled"
    with pytest.raises(NotFound, match="no profile 'nope'"):
        anyvirt.connect(profile="nope")
    with pytest.raises(InvalidSpec, match="unknown keys: colour"):
        anyvirt.connect(profile="bad")
    monkeypatch.delenv("LAB_PW")
    with pytest.raises(InvalidSpec, match=r"\$LAB_PW"):
        anyvirt.connect(profile="lab")


def test_environment_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYVIRT_URI", "memory://from-env")
    with anyvirt.connect() as host:
        assert host.uri == "memory://from-env"


def test_import_pulls_no_platform_sdk() -> None:
    code = ("import anyvirt, sys; anyvirt.connect('memory://x').vms.list(); "
            "print([m for m in sys.modules if m.split('.')[0] in ('libvirt','pyVmomi','proxmoxer')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unreadable_ca_bundle_is_invalid_spec(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="CA bundle"):
        build_target("vsphere://vc?ca=/nonexistent/ca.pem").ssl_context()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(InvalidSpec, match="CA bundle"):
        build_target(f"vsphere://vc?ca={junk}").ssl_context()
    assert build_target("vsphere://vc?verify=false").ssl_context().check_hostname is False


def test_secrets_in_the_query_become_credentials_and_never_show(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``?password=``/``?token=`` are credentials; other secret-looking options stay for the
    driver, as Secrets, and are masked wherever the target is shown."""
    caplog.set_level("DEBUG", logger="anyvirt")
    t = build_target(f"vsphere://admin@vc?password={SECRET}&token={SECRET}tok&datacenter=dc1")
    assert t.credentials.password == Secret(SECRET)
    assert t.credentials.token == Secret(SECRET + "tok")
    assert dict(t.query) == {"datacenter": "dc1"}
    p = build_target(f"proxmox://root%40pam@pve:8006?api_token={SECRET}&node=pve1")
    assert "api_token" not in p.query
    assert p.option("api_token") == Secret(SECRET)  # the driver still gets it, as a Secret
    for text in (repr(t), t.safe_uri, repr(p), p.safe_uri):
        assert SECRET not in text
    assert "node=pve1" in p.safe_uri
    with pytest.raises(InvalidSpec, match="takes no password") as unused:
        anyvirt.connect(f"memory://qsecrets?password={SECRET}")
    assert SECRET not in str(unused.value)
    # an option the backend does not read is refused, and the refusal shows no value
    with pytest.raises(InvalidSpec, match="no URI option 'client_secret'") as refused:
        anyvirt.connect(f"memory://qsecrets?client_secret={SECRET}")
    assert SECRET not in str(refused.value)
    assert SECRET not in caplog.text


def test_unknown_options_are_refused_naming_the_closest() -> None:
    with pytest.raises(InvalidSpec, match="did you mean 'password'"):
        anyvirt.connect("memory://typo", pasword="x")  # not a silent fall-back to $ANYVIRT_PASSWORD
    with pytest.raises(InvalidSpec, match="did you mean 'nodes'"):
        anyvirt.connect("memory://typo?node=2")
    with pytest.raises(InvalidSpec, match="did you mean 'timeout'"):
        anyvirt.connect("memory://typo?timout=5")


@pytest.mark.parametrize("uri", ["memory://nobody", "memory://admin:{secret}@nobody",
                                 "memory://nobody?password={secret}", "memory://nobody?token={secret}",
                                 "virtualbox:///nonexistent/VBoxManage?password={secret}"])
def test_a_backend_that_never_logs_in_refuses_a_credential(
        uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """memory:// and virtualbox:// log nobody in: a password or token given to them would be
    dropped unread, so it is refused (InvalidSpec, before VBoxManage is even looked for),
    from the URI, a keyword or a profile; one only in ``$ANYVIRT_PASSWORD`` is ambient."""
    monkeypatch.delenv("ANYVIRT_PASSWORD", raising=False)
    monkeypatch.delenv("ANYVIRT_TOKEN", raising=False)
    if "{secret}" in uri:
        with pytest.raises(InvalidSpec, match="does not log in and takes no") as refused:
            anyvirt.connect(uri.format(secret=SECRET))
        assert SECRET not in str(refused.value)
        return
    for keyword in ("password", "token"):
        with pytest.raises(InvalidSpec, match=f"takes no {keyword}"):
            anyvirt.connect(uri, **{keyword: SECRET})
    monkeypatch.setenv("ANYVIRT_PASSWORD", SECRET)
    anyvirt.connect(uri).close()
