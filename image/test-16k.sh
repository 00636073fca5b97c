#!/usr/bin/env bash
# The aarch64 hearth on a kernel with 16 KiB pages, as a Raspberry Pi 5 runs: Debian's
# own arm64-16k kernel (linux-image-6.12.*+deb12-arm64-16k-unsigned, bookworm) boots in
# qemu-system-aarch64 -M virt -cpu cortex-a76 (the Pi 5's core) from an initramfs that
# holds busybox, the binary and Debian's arm64 libc; hearth starts there, and slixmpp on
# this machine logs in through a forwarded port. tests/elf_pages.rs checks the same
# binary's segment alignment on paper; this shows the kernel loading and running it.
#
#   image/test-16k.sh [BINARY]      (default: image/build-binary.sh's aarch64 output)
#
# Needs qemu-system-arm, cpio, python3-slixmpp, the arm64 architecture in dpkg and
# libc6-dev-arm64-cross (image/build-binary.sh --install-deps sets up the last two).
# Downloads the kernel and busybox-static:arm64 packages with apt-get download.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/debian-cross/aarch64-unknown-linux-gnu/release/hearth}")
work=$(mktemp -d)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null; wait "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

kpkg=$(apt-cache search --names-only '^linux-image-6\.[0-9.]*\+deb12-arm64-16k-unsigned$' | cut -d' ' -f1 | sort -V | tail -n1)
[ -n "$kpkg" ] || { echo "test-16k.sh: no arm64-16k kernel package found (apt-get update?)" >&2; exit 1; }
(cd "$work" && apt-get download -q "$kpkg:arm64" busybox-static:arm64 >/dev/null 2>&1) ||
  { echo "test-16k.sh: cannot download $kpkg:arm64 and busybox-static:arm64 (dpkg --add-architecture arm64; apt-get update)" >&2; exit 1; }
dpkg -x "$work"/linux-image-*.deb "$work/k"
dpkg -x "$work"/busybox-static_*.deb "$work/bb"
kver=$(ls "$work/k/lib/modules")
echo "==> kernel $kpkg ($(grep -c '^CONFIG_ARM64_16K_PAGES=y' "$work/k/boot/config-$kver") x CONFIG_ARM64_16K_PAGES=y)"

root="$work/root"
mkdir -p "$root"/{bin,lib,proc,sys,dev,data,tmp}
cp "$work/bb/bin/busybox" "$root/bin/"
# Loader and libc from one glibc build (see image/test-qemu.sh for why that matters).
for lib in ld-linux-aarch64.so.1 libc.so.6 libgcc_s.so.1; do
  cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$root/lib/"
done
# virtio-net is a module in Debian's kernel; busybox's insmod takes it uncompressed.
for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
  xz -dc "$work/k/lib/modules/$kver/kernel/$m.ko.xz" > "$root/$(basename "$m").ko"
done
install -m 0755 "$binary" "$root/hearth"
printf 'sixteen-k pages' > "$root/pw"
cat > "$root/hearth.toml" <<'EOF'
domain = "pi5.test"
data_dir = "/data"
allow_root = true
mdns = false
federation = false
[c2s]
listen = ["0.0.0.0:5222"]
direct_tls_listen = []
EOF
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
insmod /failover.ko; insmod /net_failover.ko; insmod /virtio_net.ko
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
echo "16K: kernel $(uname -r), init's $(grep -m1 KernelPageSize /proc/self/smaps)"
/hearth user add alice --password-file /pw --config /hearth.toml
/hearth serve --config /hearth.toml > /tmp/hearth.log 2>&1 & p=$!
# Every 5 s while it runs: how the kernel maps hearth's memory (the host reads the last).
while kill -0 $p; do
  sleep 5
  echo "16K: hearth's mappings by page size: $(grep KernelPageSize /proc/$p/smaps | sort | uniq -c | tr -s ' \n' ' ')"
  echo "16K: hearth $(grep VmRSS /proc/$p/status | tr -s ' \t' ' ')"
done
cat /tmp/hearth.log
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start=$(date +%s)
qemu-system-aarch64 -M virt -cpu cortex-a76 -smp 2 -m 512 -display none -monitor none \
  -serial "file:$work/console.log" \
  -kernel "$work/k/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
  -append "console=ttyAMA0 rdinit=/init quiet" \
  -netdev "user,id=net,restrict=on,hostfwd=tcp:127.0.0.1:$port-:5222" \
  -device virtio-net-pci,netdev=net,romfile= &
qemu_pid=$!
printf '%s' 'sixteen-k pages' > "$work/pwfile"
deadline=$(( start + ${HEARTH_BOOT_TIMEOUT:-300} ))
until /usr/bin/python3 tests/clients/xmpp_client.py --host 127.0.0.1 --port "$port" \
    --jid alice@pi5.test --password-file "$work/pwfile" --mech SCRAM-SHA-256 \
    --insecure --timeout 20 login > "$work/login.json" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
    echo "test-16k.sh: no login; console:" >&2
    tail -40 "$work/console.log" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  sleep 3
done
echo "==> power-on to XMPP login on 16 KiB pages: $(( $(date +%s) - start ))s"
cat "$work/login.json"
for _ in $(seq 1 20); do grep -aq "16K: hearth's mappings" "$work/console.log" && break; sleep 1; done
grep -a '16K: kernel' "$work/console.log"
grep -a "16K: hearth" "$work/console.log" | tail -n2
if grep -aq 'init.s KernelPageSize: *16 kB' "$work/console.log" &&
    grep -a "16K: hearth's mappings" "$work/console.log" | tail -n1 > "$work/maps" &&
    grep -q 'KernelPageSize: 16 kB' "$work/maps" && ! grep -qE 'KernelPageSize: (4|64) kB' "$work/maps"; then
  echo "1 passed, 0 failed"
else
  echo "test-16k.sh: the kernel's pages are not 16 KiB; console:" >&2
  tail -30 "$work/console.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
