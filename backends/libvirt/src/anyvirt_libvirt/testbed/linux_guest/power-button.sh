#!/bin/sh
# busybox acpid runs this on the ACPI power button: a clean, immediate power-off.
echo "ANYVIRT-GUEST power-button" > /dev/console
sync
poweroff -f
