"""anyvirt backend: vsphere."""
