"""anyvirt backend: vsphere. ``VSphereExtensions`` is its typed extension namespace."""

from anyvirt_vsphere.driver import VSphereDriver, VSphereExtensions

__all__ = ["VSphereDriver", "VSphereExtensions"]
