"""anyvirt: one Python API for virtual machines."""
