"""anyvirt backend for VirtualBox: the ``VBoxManage`` command behind the driver SPI."""
