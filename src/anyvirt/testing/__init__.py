"""Testing support: the contract suite every backend runs.

* ``anyvirt.testing.suite``: the contract suite (``from anyvirt.testing.suite import *``).
* ``anyvirt.testing.plugin``: its pytest plugin (a marker and two fixtures; nothing autouse).

The testbeds live with their backends (``anyvirt_libvirt.testbed``,
``anyvirt_vsphere.testbed``) and are found by ``anyvirt testbed NAME`` through
:mod:`anyvirt.testbeds`; the bootable demo guest is ``anyvirt_libvirt.demo_image``.
"""
