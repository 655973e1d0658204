"""The contract suite: what every anyvirt backend must do, one way.

In a backend's tests::

    from anyvirt.testing.suite import *  # noqa: F403

    @pytest.fixture
    def anyvirt_host():
        with anyvirt.connect("mybackend://...") as host:
            yield host

Tests are selected by the host's declared capabilities (``anyvirt_requires``);
for every capability the host does not declare, ``TestNotSupported`` proves
the operation raises ``NotSupported`` before the driver is asked to change
anything. See :mod:`anyvirt.testing.plugin` for the fixtures a backend gives.
"""

from anyvirt.testing.suite.test_backup import TestBackup
from anyvirt.testing.suite.test_clone import TestClone
from anyvirt.testing.suite.test_console import TestConsole
from anyvirt.testing.suite.test_deployment import TestDeployment, TestGuestAddresses
from anyvirt.testing.suite.test_host import TestHost
from anyvirt.testing.suite.test_hostile_values import TestHostileValues
from anyvirt.testing.suite.test_lifecycle import TestLifecycle
from anyvirt.testing.suite.test_migration import TestMigration, TestMoveRefusals
from anyvirt.testing.suite.test_not_supported import TestNotSupported
from anyvirt.testing.suite.test_parity import TestParity
from anyvirt.testing.suite.test_recovery import TestRecovery
from anyvirt.testing.suite.test_snapshots import TestSnapshots
from anyvirt.testing.suite.test_vms import TestVMs

__all__ = [
    "TestBackup",
    "TestClone",
    "TestConsole",
    "TestDeployment",
    "TestGuestAddresses",
    "TestHost",
    "TestHostileValues",
    "TestLifecycle",
    "TestMigration",
    "TestMoveRefusals",
    "TestNotSupported",
    "TestParity",
    "TestRecovery",
    "TestSnapshots",
    "TestVMs",
]
