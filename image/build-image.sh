#!/usr/bin/env bash
# Builds a bootable Raspberry Pi image (arm64: Pi 3, 4, 400, Zero 2 W) with hearth
# enabled, from Debian packages only: mmdebstrap makes the root filesystem (Debian 12,
# the Pi firmware and kernel, systemd with networkd/resolved/timesyncd, OpenSSH), and
# genimage lays it out as a FAT firmware partition plus an ext4 root partition.
#
#   image/build-image.sh [--install-deps] [--binary PATH] OUTDIR   (as root; 20-30 minutes)
#
# Writes OUTDIR/hearth-pi-arm64.img (flash it with `dd` or Raspberry Pi Imager) and keeps
# the kernel and initrd in OUTDIR/boot/ for image/test-image.sh. The binary defaults to
# the one image/build-binary.sh makes.
#
# Needs: mmdebstrap, genimage, dosfstools, mtools, e2fsprogs, qemu-user-static, and
# binfmt_misc able to run arm64 programs (the maintainer scripts run under qemu):
# `arch-test arm64` must say ok. --install-deps installs those packages and
# binfmt-support, mounts binfmt_misc where it is not mounted (a fresh container has it
# unmounted) and enables Debian's qemu-aarch64 handler; where that is not allowed (a
# container without the privilege to mount or register), it says what to do instead.
#
# No default password: the owner gets in with an SSH key put on the firmware partition
# (see image/rootfs-overlay/usr/local/sbin/hearth-firstboot).
#
# STATUS (measured on a 2-core amd64 machine shared with other builds, Debian 12, qemu
# 7.2): with --install-deps from a machine without binfmt_misc mounted, binfmt-support,
# mmdebstrap or genimage, it built end to end in 3079 s (load average 8-11 from other
# builds; 18-27 min on quieter runs before; the initrd, made once by the kernel's hook,
# is most of it: mkinitramfs starts thousands of emulated processes). The image is
# 1,480,589,312 bytes (4 MiB gap + 256 MiB FAT + 1152 MiB ext4 with 668 MiB used;
# 750 MiB allocated as a sparse file; `xz -T1 -6`: 182,376,316 bytes in 6 min of CPU).
# image/test-image.sh passes: power-on to an XMPP
# login in 59 s under qemu TCG (Cortex-A53, 2 vCPUs) on that busy host, with the Wi-Fi
# file applied. That boot uses the image's kernel, initrd and disk on qemu's virt board;
# the Pi's own boot (its firmware reading config.txt and cmdline.txt from the FAT
# partition, the Pi device trees, SD card, Ethernet and Wi-Fi drivers) has not run on
# real hardware, nor has the image on a real card.
#
# Set HEARTH_KEEP_WORK=1 to keep OUTDIR/work.*/ (the root file system) for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=target/debian-cross/aarch64-unknown-linux-gnu/release/hearth
install=0
while [ $# -gt 0 ]; do
  case "$1" in
    --install-deps) install=1; shift ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    *) break ;;
  esac
done
out="${1:?usage: image/build-image.sh [--install-deps] [--binary PATH] OUTDIR}"

die() { echo "build-image.sh: $*" >&2; exit 1; }

# Debian's packages, then the kernel's binfmt_misc: a file system of its own, which a
# booted Debian mounts (systemd's proc-sys-fs-binfmt_misc.automount) but a container
# usually does not. binfmt-support keeps the handlers that packages declare in
# /usr/share/binfmts; qemu-user-static's is registered with the F flag, so the emulator
# is opened once, here, and works inside mmdebstrap's chroot too.
install_deps() {
  local packages=(mmdebstrap genimage dosfstools mtools e2fsprogs qemu-user-static binfmt-support arch-test)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  # Already able (a handler the host registered serves its containers too, without
  # binfmt_misc mounted in them): nothing to change.
  arch-test arm64 >/dev/null 2>&1 && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
      die "cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc (an unprivileged container?).
  Run on the host, once: apt-get install qemu-user-static binfmt-support &&
  update-binfmts --enable qemu-aarch64 (the handler then serves containers too),
  or start the container with --privileged."
  fi
  # A handler file installed before binfmt-support was (qemu-user-static first) is not
  # imported yet; importing one that is already known changes nothing.
  [ -e /var/lib/binfmts/qemu-aarch64 ] || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
  update-binfmts --enable qemu-aarch64 2>/dev/null || [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
    die "cannot register the qemu-aarch64 handler in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
}
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap makes device nodes and chroots)"
[ "$install" = 1 ] && install_deps
for tool in mmdebstrap genimage mkfs.vfat mcopy mke2fs arch-test; do
  command -v "$tool" >/dev/null || die "$tool not found; run with --install-deps"
done
[ -x "$binary" ] || die "no $binary; run image/build-binary.sh aarch64-unknown-linux-gnu"
if ! arch-test arm64 >/dev/null 2>&1; then
  # Already able (a handler the host registered serves its containers too, without
  # binfmt_misc mounted in them): nothing to change.
  arch-test arm64 >/dev/null 2>&1 && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    die "this machine cannot run arm64 programs: binfmt_misc is not mounted; run with --install-deps"
  fi
  die "this machine cannot run arm64 programs: no qemu-aarch64 handler in binfmt_misc; run with --install-deps"
fi
mkdir -p "$out"
out=$(realpath "$out")
work=$(mktemp -d "$out/work.XXXXXX")
# HEARTH_KEEP_WORK=1 keeps the root file system and genimage's files for a look.
[ "${HEARTH_KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
start=$(date +%s)

export HEARTH_BINARY=$(realpath "$binary") HEARTH_SRC=$PWD
mmdebstrap --verbose --architectures=arm64 --variant=minbase \
  --components=main,non-free-firmware \
  --include=systemd,systemd-sysv,udev,dbus,systemd-timesyncd,systemd-resolved,kmod,iproute2,openssh-server,linux-image-arm64,raspi-firmware,firmware-brcm80211,wireless-regdb,wpasupplicant,initramfs-tools,zstd,ca-certificates,e2fsprogs,fdisk,dosfstools,sqlite3 \
  --essential-hook='mkdir -p "$1/boot/firmware"' \
  --dpkgopt=force-confold --dpkgopt=force-confdef \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --setup-hook='mkdir -p "$1/etc/default" && printf "ROOTPART=LABEL=RASPIROOT\nCONSOLES=\"ttyS1,115200 tty0\"\nCMA=0\n" > "$1/etc/default/raspi-firmware"' \
  --setup-hook='mkdir -p "$1/etc/initramfs-tools" && echo update_initramfs=no > "$1/etc/initramfs-tools/update-initramfs.conf"' \
  --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo FSTYPE=ext4 > "$1/etc/initramfs-tools/conf.d/hearth-fstype"' \
  --customize-hook='"$HEARTH_SRC/image/customize.sh" "$1"' \
  --format=directory \
  bookworm "$work/root"

# The kernel and initrd for a qemu boot of the same root filesystem.
mkdir -p "$out/boot"
cp -L "$work/root/vmlinuz" "$out/boot/vmlinuz" 2>/dev/null || cp "$work"/root/boot/vmlinuz-* "$out/boot/vmlinuz"
cp -L "$work/root/initrd.img" "$out/boot/initrd.img" 2>/dev/null || cp "$work"/root/boot/initrd.img-* "$out/boot/initrd.img"

# The root partition is as big as its contents plus a margin (the first boot grows it to
# the card), so the image stays small to download and quick to flash.
used=$(( $(du -sxm "$work/root" | cut -f1) - $(du -sxm "$work/root/boot/firmware" | cut -f1) ))
root_mb=$(( (used * 5 / 4 + 256 + 63) / 64 * 64 ))
echo "==> root file system: ${used} MiB used, partition ${root_mb} MiB"
sed "s#@ROOTSIZE@#${root_mb}M#" image/genimage.cfg > "$work/genimage.cfg"
genimage --config "$work/genimage.cfg" --rootpath "$work/root" \
  --tmppath "$work/tmp" --inputpath "$work" --outputpath "$out"
rm -f "$out/firmware.vfat" "$out/root.ext4"
echo "==> $out/hearth-pi-arm64.img: $(stat -c %s "$out/hearth-pi-arm64.img") bytes, built in $(( $(date +%s) - start ))s"
