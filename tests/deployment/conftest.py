"""The deployment tests' fixtures, from ``deployment_support`` (helpers live there: a module
named conftest is not unique across the suite's folders)."""

from deployment_support import debian_cloud_init  # noqa: F401 - a fixture, found by its name here
