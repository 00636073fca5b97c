#!/usr/bin/env bash
# Builds hearth for TARGET with image/build-binary.sh and runs it under qemu-user on
# this machine: it must start, create its database and let a client log in
# (tests/qemu_user.rs, an ignored cargo test), and its ELF segments must load on 16 KiB
# pages (tests/elf_pages.rs). The emulated CPU is the Pi's oldest
# 64-bit core, so an instruction newer than Armv8.0-A ends the test with SIGILL.
#
#   image/test-qemu.sh [--install-deps] [--no-build] [TARGET]    (default aarch64)
#
# Needs qemu-user-static (Debian package), plus what build-binary.sh needs. Takes
# minutes (a release build with LTO), so CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --install-deps) deps=--install-deps; shift ;;
    --no-build) build=0; shift ;;
    *) break ;;
  esac
done
target="${1:-aarch64-unknown-linux-gnu}"
case "$target" in
  aarch64-unknown-linux-gnu)
    qemu=qemu-aarch64-static gnu=aarch64-linux-gnu cpu=cortex-a53 ;;
  armv7-unknown-linux-gnueabihf)
    qemu=qemu-arm-static gnu=arm-linux-gnueabihf cpu=cortex-a7 ;;
  *) echo "usage: image/test-qemu.sh [--install-deps] [--no-build] [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf]" >&2; exit 2 ;;
esac
if ! command -v "$qemu" >/dev/null; then
  if [ -n "$deps" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static
  else
    echo "test-qemu.sh: $qemu not found (Debian package qemu-user-static)" >&2
    exit 1
  fi
fi
[ "$build" = 1 ] && image/build-binary.sh $deps "$target"

bin="$PWD/target/debian-cross/$target/release/hearth"
export HEARTH_CROSS_BINARY="$bin"
export HEARTH_CROSS_RUNNER="$(command -v "$qemu")"
export QEMU_CPU="$cpu"
# The target's dynamic loader and libc must come from one and the same glibc build.
# Debian's multiarch libc6:ARCH (a dependency of libstd-rust-web-dev:ARCH), where
# installed, is the whole set, as on a Pi. The libc6-*-cross copy under /usr/$gnu is a
# set too, but qemu-user's QEMU_LD_PREFIX only redirects paths that exist under the
# prefix: the loader comes from /usr/$gnu/lib, while /etc/ld.so.cache and
# /lib/$gnu/libc.so.6 fall through to the host, i.e. to libc6:ARCH when that is also
# installed. That pairs the cross loader (2.36-8cross1) with the multiarch libc
# (2.36-9+deb12u14), whose private `_rtld_global` layouts differ by 8 bytes, and the
# first pthread_create spins for ever walking the loader's stack-cache list (gdb:
# pthread_create+552, `ldr x0, [x0]` on a list head that points to itself). Hence the
# multiarch set when there is one, and otherwise the prefix with the guest's library
# path pinned inside it (QEMU_SET_ENV sets the guest's environment only).
# HEARTH_QEMU_LIBC=cross takes the second way even where the first is possible.
loader=$(case "$target" in aarch64-*) echo /lib/ld-linux-aarch64.so.1 ;; *) echo /lib/ld-linux-armhf.so.3 ;; esac)
if [ "${HEARTH_QEMU_LIBC:-}" != cross ] && [ -e "$loader" ] && [ -e "/lib/$gnu/libc.so.6" ]; then
  unset QEMU_LD_PREFIX QEMU_SET_ENV
else
  echo "test-qemu.sh: using the cross libc in /usr/$gnu (HEARTH_QEMU_LIBC=cross, or no multiarch libc6)" >&2
  export QEMU_LD_PREFIX="/usr/$gnu" QEMU_SET_ENV="LD_LIBRARY_PATH=/lib"
fi
echo "==> $target: $(stat -c %s "$bin") bytes stripped, under $qemu with QEMU_CPU=$cpu"
# tests/elf_pages.rs: the binary's segments load on the page sizes of its boards' kernels
# (16 KiB on a Pi 5); tests/qemu_user.rs: it serves a login under the emulator.
cargo test --test elf_pages --test qemu_user -- --include-ignored --nocapture
