#!/bin/sh
# /init of anyvirt's Linux test guest (busybox sh as PID 1).
# Applies a NoCloud seed (CD-ROM labelled cidata): hostname from meta-data's
# local-hostname, users' ssh_authorized_keys from user-data's #cloud-config;
# runs DHCP on every NIC; prints each fact it applied on the serial console as
# an "ANYVIRT-GUEST key=value" line, then keeps a shell on the console.
# The builder writes /etc/anyvirt-modules (modules to load, in order).

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /root /home /seed /run
mount -t devpts devpts /dev/pts

say() { echo "ANYVIRT-GUEST $*" > /dev/console; }

say "boot kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
while read -r module; do
    insmod "/lib/modules/$module.ko" 2>/dev/null
done < /etc/anyvirt-modules
ip link set lo up
say "modules-loaded uptime=$(cut -d' ' -f1 /proc/uptime)"

# --- the seed: wait for the cidata CD-ROM (SCSI/ATA discovery is asynchronous) ---
seed_dev=""
tries=0
while [ -z "$seed_dev" ] && [ "$tries" -lt 25 ]; do
    seed_dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
    [ -n "$seed_dev" ] || { tries=$((tries + 1)); sleep 0.2; }
done

# "key: value", "key: 'value'" or JSON "\"key\": \"value\"" (meta-data is YAML or JSON).
yaml_value() {
    sed -n -E "s/^[[:space:]{,]*[\"']?$1[\"']?[[:space:]]*:[[:space:]]*[\"']?([^\"',}]*)[\"']?.*$/\1/p" "$2" | head -n 1
}

# Block-style cloud-config users[].name/ssh_authorized_keys and top-level
# ssh_authorized_keys (root's) -> "user key" lines.
cloud_keys() {
    awk '
        function unquote(s) {
            sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
            if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2)
            return s
        }
        function indent(s) { match(s, /^[ -]*/); return RLENGTH }
        /^[ \t]*#/ || /^[ \t]*$/ { next }
        /^[^ \t-]/ { section = $0; sub(/:.*/, "", section); user = "root"; inkeys = 0 }
        section == "ssh_authorized_keys" && /^ssh_authorized_keys:/ { inkeys = 1; keyindent = 0; next }
        section == "users" && /^[ \t]*-?[ \t]*name[ \t]*:/ {
            line = $0; sub(/^[ \t]*-?[ \t]*name[ \t]*:/, "", line); user = unquote(line); inkeys = 0; next
        }
        section == "users" && /^[ \t]*-?[ \t]*ssh_authorized_keys[ \t]*:/ { inkeys = 1; keyindent = indent($0); next }
        inkeys && /^[ \t]*- / && indent($0) > keyindent {
            line = $0; sub(/^[ \t]*- /, "", line); print user " " unquote(line); next
        }
        inkeys && indent($0) <= keyindent { inkeys = 0 }
    ' "$1"
}

hostname_applied=""
if [ -n "$seed_dev" ] && mount -t iso9660 -o ro "$seed_dev" /seed; then
    say "seed=$seed_dev uptime=$(cut -d' ' -f1 /proc/uptime)"
    if [ -f /seed/meta-data ]; then
        instance=$(yaml_value instance-id /seed/meta-data)
        [ -n "$instance" ] && say "instance-id=$instance"
        name=$(yaml_value local-hostname /seed/meta-data)
        if [ -n "$name" ]; then
            hostname "$name" && echo "$name" > /etc/hostname && hostname_applied="$name"
            say "hostname=$(hostname)"
        fi
    fi
    if [ -f /seed/user-data ] && head -n 1 /seed/user-data | grep -q '^#cloud-config'; then
        cloud_keys /seed/user-data | while read -r user key; do
            case "$user" in
                root) home=/root ;;
                *[!A-Za-z0-9._-]*|"") say "ssh-key-skipped user=$user"; continue ;;
                *) home="/home/$user" ;;
            esac
            mkdir -p "$home/.ssh" && chmod 700 "$home/.ssh"
            echo "$key" >> "$home/.ssh/authorized_keys" && chmod 600 "$home/.ssh/authorized_keys"
            say "ssh-key user=$user $key"
        done
    fi
    [ -f /seed/network-config ] && say "network-config=present"
else
    say "seed=none"
fi
say "seed-done"

# --- DHCP on every NIC (udhcpc stays in the background and renews) ---
for path in /sys/class/net/*; do
    nic=${path##*/}
    [ "$nic" = lo ] && continue
    ip link set "$nic" up
    udhcpc -i "$nic" -s /etc/udhcpc.script -t 30 -T 1 -A 1 -f \
        ${hostname_applied:+-x "hostname:$hostname_applied"} >/dev/null 2>&1 &
done

# --- the ACPI power button powers the guest off ---
acpid -c /etc/acpi -l /dev/null 2>/dev/null

say "init-done uptime=$(cut -d' ' -f1 /proc/uptime)"
while true; do
    setsid cttyhack sh
    sleep 1
done
