#!/usr/bin/env bash
# Boots the image that image/build-image.sh made, in qemu-system-aarch64 -M virt (the
# Pi's own board is poorly emulated; the root filesystem, kernel and systemd are the
# image's own), and checks that a client logs in to hearth running under systemd inside.
#
#   image/test-image.sh OUTDIR        (OUTDIR as given to build-image.sh; minutes)
#
# A copy of the image gets the first-boot files an owner would put on the firmware
# partition (host name "kitchen", one hearth account), so the test also covers
# hearth-firstboot. The guest's network is qemu's user mode with restrict=on: nothing
# leaves this machine; ports 5222/5223 are forwarded to loopback. The client is
# tests/clients/xmpp_client.py; it cannot know the certificate the guest generated,
# so it does not verify it (--insecure). The disk copy is made 512 MiB bigger than the
# image, as a bigger SD card would be, and the test checks that the first boot grew the
# root file system into it. A hearth-wifi.txt on the partition checks the Wi-Fi set-up
# (file consumed, wpa_supplicant configuration written root-only with the PSK, started
# with wlan0); the virt board has no Wi-Fi device, so association is not tested. Needs
# qemu-system-arm, mtools, e2fsprogs (debugfs), util-linux (partx), python3-slixmpp.
#
# The qemu board is not a Pi: its firmware, the FAT partition's config.txt and
# cmdline.txt and the Pi's device trees are not used here; qemu loads the kernel and
# initrd directly (the same files raspi-firmware put on the firmware partition).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath "${1:?usage: image/test-image.sh OUTDIR}")
work=$(mktemp -d)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null; wait "$qemu_pid" 2>/dev/null; fi
  if [ "${HEARTH_KEEP_WORK:-0}" = 1 ]; then echo "test-image.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

cp "$out/hearth-pi-arm64.img" "$work/disk.img"
image_bytes=$(stat -c %s "$work/disk.img")
truncate -s +512M "$work/disk.img"
printf 'kitchen\n' > "$work/hostname"
printf 'alice boot-test-password\n' > "$work/hearth-users.txt"
printf '%s' 'boot-test-password' > "$work/pw"
# Wi-Fi as an owner would write it on Windows (CRLF). qemu's virt board has no Wi-Fi
# device: what is checked is that the file is consumed and the supplicant's
# configuration written, root-only, with the PSK and without the passphrase.
wifi_ssid='Kitchen Wi-Fi' wifi_pass='boot-test wifi passphrase'
printf 'country=GB\r\nssid=%s\r\npassword=%s\r\n' "$wifi_ssid" "$wifi_pass" > "$work/hearth-wifi.txt"
wifi_psk=$(python3 -c 'import hashlib,sys; print(hashlib.pbkdf2_hmac("sha1", sys.argv[1].encode(), sys.argv[2].encode(), 4096, 32).hex())' "$wifi_pass" "$wifi_ssid")
# The firmware partition starts 4 MiB in (image/genimage.cfg).
mcopy -o -i "$work/disk.img@@4M" "$work/hostname" "$work/hearth-users.txt" "$work/hearth-wifi.txt" ::

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start=$(date +%s)
qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -display none \
  -serial "file:$work/console.log" -monitor none \
  -kernel "$out/boot/vmlinuz" -initrd "$out/boot/initrd.img" \
  -append "root=LABEL=RASPIROOT rw console=ttyAMA0 systemd.show_status=1" \
  -drive "if=none,id=disk,file=$work/disk.img,format=raw" -device virtio-blk-pci,drive=disk \
  -netdev "user,id=net,restrict=on,hostfwd=tcp:127.0.0.1:$port-:5222" \
  -device virtio-net-pci,netdev=net,romfile= &
qemu_pid=$!

deadline=$(( start + ${HEARTH_BOOT_TIMEOUT:-900} ))
while :; do
  if /usr/bin/python3 tests/clients/xmpp_client.py --host 127.0.0.1 --port "$port" \
      --jid alice@kitchen.local --password-file "$work/pw" --mech SCRAM-SHA-256 \
      --insecure --timeout 20 login > "$work/login.json" 2>/dev/null; then
    break
  fi
  if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
    echo "test-image.sh: no login; console:" >&2
    tail -60 "$work/console.log" >&2 || true
    exit 1
  fi
  sleep 5
done
login_s=$(( $(date +%s) - start ))
echo "==> power-on to XMPP login: ${login_s}s (TCG emulation of a Cortex-A53)"
cat "$work/login.json"

# What the first boot did, from its lines on the serial console.
fail=0
grep -a "hearth-firstboot:" "$work/console.log" || true
if ! grep -aq "hearth-firstboot: host name kitchen" "$work/console.log"; then
  echo "test-image.sh: hearth-firstboot did not set the host name from the firmware partition" >&2
  fail=1
fi
if ! grep -aq "hearth-firstboot: hearth account alice created" "$work/console.log"; then
  echo "test-image.sh: hearth-firstboot did not report the account from hearth-users.txt" >&2
  fail=1
fi
# The root partition ends where the image ends; after growing, the file system must
# be bigger than the whole image was (by most of the 512 MiB added).
size=$(grep -ao "hearth-firstboot: root file system [0-9.]*[KMG]" "$work/console.log" | awk '{print $5}' | tail -n1)
size_mib=$(echo "$size" | awk '/G$/ {printf "%d", $0 * 1024} /M$/ {printf "%d", $0}')
if [ -z "$size_mib" ] || [ "$size_mib" -le $(( image_bytes / 1048576 )) ]; then
  echo "test-image.sh: root file system is ${size:-unknown}; the image alone is $(( image_bytes / 1048576 )) MiB, so it did not grow" >&2
  fail=1
fi
grep -aE "Started hearth|Reached target.*Multi-User|login:" "$work/console.log" | tail -5 || true
# hearth-users.txt holds passwords in the clear: it must be gone from the card, even
# though the machine is switched off (qemu killed) without a shutdown.
kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
if MTOOLS_SKIP_CHECK=1 mdir -b -i "$work/disk.img@@4M" ::hearth-users.txt >/dev/null 2>&1; then
  echo "test-image.sh: hearth-users.txt is still on the firmware partition" >&2
  fail=1
fi
# Wi-Fi: the file gone from the card, its settings on the root file system. The
# machine was switched off without a shutdown, so e2fsck first replays the journal
# on a copy of the root partition (as the next boot would).
if MTOOLS_SKIP_CHECK=1 mdir -b -i "$work/disk.img@@4M" ::hearth-wifi.txt >/dev/null 2>&1; then
  echo "test-image.sh: hearth-wifi.txt (a Wi-Fi passphrase) is still on the firmware partition" >&2
  fail=1
fi
grep -a "hearth-wifi:" "$work/console.log" || true
if ! grep -aq "hearth-wifi: Wi-Fi network $wifi_ssid configured for wlan0 (country GB)" "$work/console.log"; then
  echo "test-image.sh: hearth-wifi did not report the network from hearth-wifi.txt" >&2
  fail=1
fi
read -r root_start root_sectors < <(partx -g -n 2 -o START,SECTORS "$work/disk.img")
dd if="$work/disk.img" of="$work/root.ext4" bs=512 skip="$root_start" count="$root_sectors" conv=sparse status=none
e2fsck -fy "$work/root.ext4" >/dev/null 2>&1 || [ $? -le 1 ] || { echo "test-image.sh: e2fsck failed on the root file system" >&2; fail=1; }
conf=/etc/wpa_supplicant/wpa_supplicant-wlan0.conf
debugfs -R "cat $conf" "$work/root.ext4" > "$work/wpa.conf" 2>/dev/null || true
wifi_mode=$(debugfs -R "stat $conf" "$work/root.ext4" 2>/dev/null | sed -n 's/.*Mode: *\([0-7]*\).*/\1/p')
echo "==> $conf (mode ${wifi_mode:-missing}):"
sed 's/psk=.*/psk=…/' "$work/wpa.conf"
if [ "$wifi_mode" != 0600 ] && [ "$wifi_mode" != 600 ]; then
  echo "test-image.sh: $conf has mode ${wifi_mode:-missing}, not 0600" >&2
  fail=1
fi
if ! grep -q "psk=$wifi_psk" "$work/wpa.conf" || grep -q "$wifi_pass" "$work/wpa.conf"; then
  echo "test-image.sh: $conf lacks the PSK or holds the passphrase" >&2
  fail=1
fi
if ! debugfs -R "stat /etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service" \
    "$work/root.ext4" 2>/dev/null | grep -q 'Type: symlink'; then
  echo "test-image.sh: wpa_supplicant@wlan0 is not started with wlan0" >&2
  fail=1
fi
# The Pi boards' Wi-Fi chips: 43430 (Pi 3, Zero W), 43455 (Pi 3+, 4), 43456 (Pi 400,
# CM4), 43436 and 43430b0 (Zero 2 W). What Debian's firmware-brcm80211 has of them:
echo "==> Wi-Fi firmware in the image: $(debugfs -R 'ls -p /usr/lib/firmware/brcm' "$work/root.ext4" 2>/dev/null |
  awk -F/ 'NF > 5 && $6 ~ /^brcmfmac434(30|30b0|36|36s|55|56)-sdio/ {print $6}' | tr '\n' ' ')"
rm -f "$work/root.ext4"

if [ "$fail" = 0 ]; then
  echo "1 passed, 0 failed"
else
  echo "--- console tail" >&2
  tail -60 "$work/console.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
