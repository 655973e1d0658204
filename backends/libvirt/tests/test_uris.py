"""anyvirt URI -> libvirt URI: the scheme loses ``libvirt+``, everything else stays,
anyvirt's own options go, and a password never enters the libvirt URI."""

from __future__ import annotations

import socket
import time

import pytest
from anyvirt_libvirt.connection import libvirt_uri

import anyvirt
from anyvirt.connect import build_target
from anyvirt.errors import AnyvirtError, ConnectionFailed, InvalidSpec
from anyvirt.model import Allocation


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("libvirt+qemu:///system", "qemu:///system"),
        ("libvirt+qemu:///session", "qemu:///session"),
        ("libvirt+qemu+ssh://user@kvm1/system", "qemu+ssh://user@kvm1/system"),
        ("libvirt+qemu+ssh://user@kvm1:2222/system?keyfile=/k/id",
         "qemu+ssh://user@kvm1:2222/system?keyfile=/k/id"),
        ("libvirt+qemu+tcp://kvm1/system?timeout=5", "qemu+tcp://kvm1/system"),
        ("libvirt+qemu+unix:///system?socket=/tmp/d/libvirt-sock",
         "qemu+unix:///system?socket=/tmp/d/libvirt-sock"),
        ("libvirt+test:///default", "test:///default"),
        ("libvirt+test:///path/to/file.xml", "test:///path/to/file.xml"),
        ("libvirt+qemu:///embed?root=/var/tmp/e", "qemu:///embed?root=/var/tmp/e"),
        ("libvirt+qemu+unix:///system?socket=/tmp/s&accel=tcg", "qemu+unix:///system?socket=/tmp/s"),
    ],
)
def test_uri_mapping(uri: str, expected: str) -> None:
    assert libvirt_uri(build_target(uri)) == expected


def test_password_never_enters_the_libvirt_uri() -> None:
    target = build_target("libvirt+qemu+tcp://admin:s3cret@kvm1/system")
    assert "s3cret" not in libvirt_uri(target)
    assert libvirt_uri(target) == "qemu+tcp://admin@kvm1/system"


def test_unreachable_daemon_is_connection_failed_without_secrets() -> None:
    with pytest.raises(ConnectionFailed) as caught:
        anyvirt.connect("libvirt+qemu+unix:///system?socket=/nonexistent/sock", password="s3cret")
    assert "s3cret" not in str(caught.value)


def test_a_silent_daemon_fails_the_open_within_the_timeout() -> None:
    """A host that accepts the connection and never answers (a hung libvirtd, a
    firewall that swallows packets after the handshake) must not block ``connect``."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="no answer within 1 s"):
            anyvirt.connect(f"libvirt+qemu+tcp://127.0.0.1:{port}/system?timeout=1")
        assert time.monotonic() - started < 5


def test_accel_takes_kvm_or_tcg_and_only_what_the_host_offers() -> None:
    with pytest.raises(InvalidSpec, match="kvm or tcg"):
        anyvirt.connect("libvirt+test:///default?accel=hvf")
    # libvirt's test driver offers "test" domains only: neither TCG nor KVM can be had
    with pytest.raises(InvalidSpec, match="no TCG guests"):
        anyvirt.connect("libvirt+test:///default?accel=tcg")


def test_embed_needs_a_root() -> None:
    with pytest.raises(AnyvirtError) as caught:
        anyvirt.connect("libvirt+qemu:///embed")
    assert isinstance(caught.value, InvalidSpec | ConnectionFailed)


def test_test_driver_creates_despite_its_fictional_capacity() -> None:
    """test:///default runs a domain of 2 GiB (8 GiB maximum) on a 3 GiB 'host': no
    overcommit guard there."""
    with anyvirt.connect("libvirt+test:///default") as host:
        builtin = host.vms.get("test").info()
        assert builtin.memory_mib == 2048, "the current size, as virsh dominfo says"
        assert builtin.extra["memory_max_mib"] > host.info().memory_mib
        vm = host.vms.create(anyvirt.VMSpec(name="fits-anyway", memory_mib=2048))
        assert host.vms.get("fits-anyway").id == vm.id
        assert host.info().allocation.memory_ratio > 1
        vm.delete()
    strict_policy = anyvirt.Overcommit(counts="defined")
    with anyvirt.connect("libvirt+test:///default", overcommit=strict_policy) as strict, \
            pytest.raises(anyvirt.CapacityExceeded):
        strict.vms.create(anyvirt.VMSpec(name="refused", memory_mib=2048))


def test_allocation_is_counted_by_the_cores_one_rule() -> None:
    """Templates are not counted (anyvirt.capacity): the driver keeps no second rule
    (it counted them in its own host_info figures)."""
    with anyvirt.connect("libvirt+test:///default") as host:
        vm = host.vms.create(anyvirt.VMSpec(name="alloc-template", cpus=3, memory_mib=300))
        try:
            before = host.info().allocation
            vm.mark_template()
            after = host.info().allocation
            assert (after.vms, after.vcpus, after.memory_mib) == (
                before.vms - 1, before.vcpus - 3, before.memory_mib - 300)
            assert host.driver.host_info().allocation == Allocation(), \
                "the driver reports capacity; the core counts allocation"
        finally:
            vm.delete()


def test_a_closed_host_stays_closed() -> None:
    """Using a Host after close() must not silently open a new connection."""
    host = anyvirt.connect("libvirt+test:///default")
    assert host.vms.list()
    host.close()
    with pytest.raises(ConnectionFailed, match="closed"):
        host.vms.list()
