"""Testing support: the contract suite every backend runs, and fixtures that start testbeds.

* ``anyvirt.testing.suite``: the contract suite (``from anyvirt.testing.suite import *``).
* ``anyvirt.testing.libvirt_testbed``: isolated local libvirt daemons.
* ``anyvirt.testing.guest``: the tiny real guest that proves boots, ACPI shutdowns and snapshots.
* ``anyvirt.testing.vcsim_testbed``: VMware's vcsim simulator, built from Debian's source.
"""
