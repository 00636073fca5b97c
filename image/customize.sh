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
for unit in hearth.service hearth-firstboot.service hearth-wifi.service \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service ssh.service; do
  systemctl --root="$root" enable "$unit"
done
# Wi-Fi is one interface driven by wpa_supplicant@wlan0 (hearth-wifi sets it up from the
# firmware partition); Debian also enables the D-Bus supplicant for NetworkManager-like
# managers, which nothing here talks to: a resident process less.
systemctl --root="$root" disable wpa_supplicant.service 2>/dev/null || true
echo hearth > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\thearth\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# Each Pi gets its own identity on first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
# Root has no password (Debian's default '*'); say so explicitly.
chroot "$root" passwd --lock root >/dev/null
# The hearth user exists in the image already, so first boot need not wait for it.
chroot "$root" systemd-sysusers /usr/lib/sysusers.d/hearth.conf
# systemd's first-boot wizard would ask on the console (HDMI or serial) for a locale,
# a time zone and a root password, and wait there forever on a headless Pi. hearth's own
# first-boot step takes what it needs from the firmware partition instead.
systemctl --root="$root" mask systemd-firstboot.service
# systemd-resolved's stub; the build host's resolv.conf was copied in for apt.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# The setup hook turned off the initramfs updates that package triggers ask for (each
# takes minutes under qemu-user). The kernel's own postinst hook made the initrd once,
# after initramfs-tools and its hooks were configured, and raspi-firmware copied it to
# /boot/firmware; only if that did not happen is it made here. (A setup hook names the
# root file system's type, ext4, which initramfs-tools cannot probe in a chroot, so that
# the initrd has fsck.ext4 and checks the root file system: the Pi mounts it read-write
# from the start, and nothing else would check it.)
echo update_initramfs=yes > "$root/etc/initramfs-tools/update-initramfs.conf"
if ! ls "$root"/boot/firmware/initrd.img-* >/dev/null 2>&1; then
  chroot "$root" update-initramfs -c -k all
fi
ls -l "$root"/boot/firmware/
