#!/bin/sh
# udhcpc's hook in anyvirt's Linux test guest: applies the lease and prints it.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        mac=$(cat "/sys/class/net/$interface/address")
        echo "ANYVIRT-GUEST address=$ip/$mask mac=$mac nic=$interface uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
        ;;
esac
exit 0
