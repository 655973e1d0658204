"""The base class of the contract suite's test classes.

The capability gate is an autouse fixture of this class, not of the pytest
plugin: it runs for the suite's tests only (and a backend's subclasses of
them), never in the rest of a project that has anyvirt installed.
"""

from __future__ import annotations

import pytest

from anyvirt.host import Host


class ContractTests:
    """Skips a test marked ``anyvirt_requires`` where the host does not declare the capability.

    That skip is honest: the same capability's ``NotSupported`` test then runs instead.
    """

    @pytest.fixture(autouse=True)
    def _anyvirt_capability_gate(self, request: pytest.FixtureRequest) -> None:
        needed = [c for m in request.node.iter_markers("anyvirt_requires") for c in m.args]
        if not needed:
            return
        host: Host = request.getfixturevalue("anyvirt_host")
        missing = [c for c in dict.fromkeys(needed) if c not in host.capabilities]
        if missing:
            names = ", ".join(str(c) for c in missing)
            pytest.skip(f"{host.backend} declares no {names} (its NotSupported test covers it)")
