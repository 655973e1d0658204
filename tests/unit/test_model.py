"""Specs validate at the edge: bad input fails on construction, before any host is touched."""

from __future__ import annotations

import attrs
import pytest

from anyvirt import DiskSpec, Firmware, InvalidSpec, NicSpec, VMSpec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "must not be empty"),
        ({"name": " web"}, "white space"),
        ({"name": "we\nb"}, "control characters"),
        ({"name": "x" * 81}, "limit is 80"),
        ({"name": "web", "cpus": 0}, "at least 1"),
        ({"name": "web", "cpus": 1.5}, "whole number"),
        ({"name": "web", "cpus": True}, "whole number"),
        ({"name": "web", "memory_mib": -1}, "at least 1"),
        ({"name": "web", "firmware": "uefi-ish"}, "bios' or 'efi"),
        ({"name": "web", "disks": "disk"}, "list of DiskSpec"),
        ({"name": "web", "disks": [{"size_gib": 1}]}, "DiskSpec items"),
    ],
)
def test_vmspec_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        VMSpec(**kwargs)  # type: ignore[arg-type]


def test_vmspec_accepts_unusual_but_valid_names() -> None:
    for name in ("web 1", "a'b\"c", "<x&y>", "café-ünïcode", "日本語"):
        assert VMSpec(name=name).name == name


def test_vmspec_normalises() -> None:
    spec = VMSpec(name="w", disks=[DiskSpec(size_gib=1)], nics=[NicSpec(mac="52:54:00:AA:BB:CC")],
                  firmware="EFI")
    assert spec.firmware is Firmware.EFI
    assert isinstance(spec.disks, tuple)
    assert spec.nics[0].mac == "52:54:00:aa:bb:cc"
    assert hash(spec) == hash(VMSpec(name="w", disks=[DiskSpec(size_gib=1)],
                                     nics=[NicSpec(mac="52:54:00:aa:bb:cc")], firmware="efi"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs size_gib or image"),
        ({"size_gib": 0}, "greater than 0"),
        ({"size_gib": -5}, "greater than 0"),
        ({"size_gib": 1, "bus": "floppy"}, "not one of"),
        ({"image": ""}, "non-empty"),
        ({"size_gib": float("inf")}, "finite"),
        ({"size_gib": float("nan")}, "greater than 0"),
    ],
)
def test_diskspec_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        DiskSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "zz:54:00:12:34:56", "01:00:5e:00:00:01"])
def test_nicspec_rejects_bad_macs(mac: str) -> None:
    with pytest.raises(InvalidSpec):
        NicSpec(mac=mac)


def test_duplicate_macs_in_one_spec() -> None:
    nic = NicSpec(mac="52:54:00:12:34:56")
    with pytest.raises(InvalidSpec, match="same MAC"):
        VMSpec(name="w", nics=[nic, nic])


def test_disk_size_bytes() -> None:
    assert DiskSpec(size_gib=0.5).size_bytes == 512 * 1024 * 1024
    assert DiskSpec(image="/x.qcow2").size_bytes is None


def test_a_summary_row_is_the_same_value_as_a_summary() -> None:
    from anyvirt.model import PowerState, VMSummary, evolve, summary_row

    fields = ("6f1c", "web", PowerState.SUSPENDED, "shutoff (saved)", 2, 512, "node-1", True)
    made, row = VMSummary(*fields), summary_row(*fields)
    assert type(row) is VMSummary
    assert row == made and hash(row) == hash(made) and repr(row) == repr(made)
    assert row != summary_row(*fields[:-1], False)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        row.name = "other"  # type: ignore[misc]
    assert evolve(row, template=False) == VMSummary(*fields[:-1], False)
