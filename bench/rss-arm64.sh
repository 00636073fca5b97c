#!/usr/bin/env bash
# Resident memory of aarch64 hearth binaries just after start, on Debian's arm64 kernel
# (the one the OS image boots, Linux 6.1) in qemu-system-aarch64 -cpu cortex-a53: how
# the kernel maps the binary's pages is the kernel's business, not the emulator's, so
# the figures are those of a Pi running the image, without the Pi.
#
#   bench/rss-arm64.sh KERNEL BINARY...     e.g.
#   bench/rss-arm64.sh /var/tmp/hearth-image/boot/vmlinuz \
#       target/debian-cross/aarch64-unknown-linux-gnu/release/hearth
#
# KERNEL: boot/vmlinuz from image/build-image.sh's output directory. HEARTH_ENV, if set,
# is put in each server's environment (e.g. HEARTH_ENV=RUST_MIN_STACK=1048576, as the
# systemd unit does). Each binary is
# started 3 times in turn (after one start that makes the certificate and database),
# from an initramfs holding busybox, the binaries and Debian's arm64 libc; 3 s after it
# listens the script prints the resident KiB of each mapping, summed from
# /proc/PID/smaps (on 6.1, VmRSS in /proc/PID/status is only approximate: its counters
# are per thread and folded in every 64 faults). The files live in the initramfs
# (tmpfs), so all their pages are in memory, as for a binary read since boot. Needs
# qemu-system-arm, cpio, the arm64 architecture in dpkg (for busybox-static:arm64) and
# libc6-dev-arm64-cross (image/build-binary.sh installs both).
set -euo pipefail
kernel=$(realpath "${1:?usage: bench/rss-arm64.sh KERNEL BINARY...}")
shift
[ $# -ge 1 ] || { echo "usage: bench/rss-arm64.sh KERNEL BINARY..." >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,lib,proc,sys,dev,data,tmp}
(cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) ||
    { echo "rss-arm64.sh: cannot download busybox-static:arm64 (dpkg --add-architecture arm64; apt-get update)" >&2; exit 1; }
dpkg -x "$work"/busybox-static_*_arm64.deb "$work/bb"
cp "$work/bb/bin/busybox" "$root/bin/"
for lib in ld-linux-aarch64.so.1 libc.so.6 libgcc_s.so.1; do
    cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$root/lib/"
done
names=()
for i in $(seq 1 $#); do
    cp "${!i}" "$root/hearth$i"
    chmod 755 "$root/hearth$i"
    names+=("/hearth$i")
done
cat >"$root/hearth.toml" <<'EOF'
domain = "pi.test"
data_dir = "/data"
allow_root = true
mdns = false
federation = false
[c2s]
listen = ["127.0.0.1:5222"]
direct_tls_listen = []
EOF
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ip link set lo up
echo "RSS kernel \$(uname -r)"
/hearth1 serve --config /hearth.toml >/tmp/first.log 2>&1 & p=\$!
n=0; while ! netstat -ltn | grep -q ':5222 ' && [ \$n -lt 600 ]; do sleep 0.1; n=\$((n+1)); done
kill \$p; wait \$p
for i in 1 2 3; do for b in ${names[*]}; do
  env ${HEARTH_ENV:-} \$b serve --config /hearth.toml >/tmp/log 2>&1 & p=\$!
  n=0; while ! netstat -ltn | grep -q ':5222 ' && [ \$n -lt 600 ]; do sleep 0.1; n=\$((n+1)); done
  sleep 3
  awk -v b=\$b '/^[0-9a-f]/ {n = \$6 == "" ? "[anon]" : \$6} /^Rss:/ {r[n] += \$2; t += \$2}
    /^AnonHugePages:/ {h += \$2}
    END {printf "RSS %s total %d KiB (transparent huge pages %d):", b, t, h
         for (k in r) if (r[k] >= 64) printf " %s %d", k, r[k]; print ""}' /proc/\$p/smaps
  awk '/^[0-9a-f]/ {h = \$1} /^AnonHugePages: *[1-9]/ {print "RSS   huge pages in", h}' /proc/\$p/smaps
  [ \$i = 1 ] && cat /proc/\$p/maps | sed 's/^/RSS   map /' 
  kill \$p; wait \$p
done; done
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz")
timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -display none \
    -serial "file:$work/console.log" -monitor none -nic none \
    -kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyAMA0 rdinit=/init quiet"
grep -a '^RSS' "$work/console.log" | tr -d '\r' || { tail -30 "$work/console.log" >&2; exit 1; }
for i in $(seq 1 $#); do echo "/hearth$i = ${!i}"; done
