#!/bin/sh
# mmdebstrap customize hook of image/build-image.sh: puts hearth and the image's own
# settings into the root filesystem at $1. HEARTH_BINARY and HEARTH_SRC come from the
# build script.
set -eu
root="$1"
src="$HEARTH_SRC"
cp -a "$src/image/rootfs-overlay/." "$root/"
install -m 0755 "$HEARTH_BINARY" "$root/usr/local/bin/hearth"
install -m 0644 "$src/systemd/hearth.service" "$root/etc/systemd/system/hearth.service"
install -m 0644 -D "$src/systemd/hearth.sysusers" "$root/usr/lib/sysusers.d/hearth.conf"
install -m 0644 -D "$src/systemd/hearth.toml" "$root/etc/hearth/hearth.toml"
for unit in hearth.service hearth-firstboot.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service ssh.service; do
  systemctl --root="$root" enable "$unit"
done
echo hearth > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thearth\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# Each Pi gets its own identity on first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
# Root has no password (Debian's default '*'); say so explicitly.
chroot "$root" passwd --lock root >/dev/null
# The setup hook deferred every initramfs run (each takes minutes under qemu-user);
# make the one that counts, which raspi-firmware's hook copies to /boot/firmware.
echo update_initramfs=yes > "$root/etc/initramfs-tools/update-initramfs.conf"
chroot "$root" update-initramfs -c -k all
