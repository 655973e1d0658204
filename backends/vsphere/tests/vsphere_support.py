"""Helpers shared by the vSphere backend's tests (a module name no other test folder uses)."""

from __future__ import annotations

from anyvirt_vsphere.driver import VSphereDriver

from anyvirt.host import Host


def vsphere_driver(host: Host) -> VSphereDriver:
    """The driver under ``host``, for what a test checks below the public API."""
    driver = host.driver
    assert isinstance(driver, VSphereDriver)
    return driver
