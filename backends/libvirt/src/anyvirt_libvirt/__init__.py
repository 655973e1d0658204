"""anyvirt backend: libvirt."""
