"""Testbed fixtures for every test directory (pytest only reads pytest_plugins here, at the root).

The fixtures are session-scoped and start nothing until a test asks for them.
"""

pytest_plugins = ["anyvirt.testing.libvirt_fixtures", "anyvirt.testing.vcsim_fixtures"]
