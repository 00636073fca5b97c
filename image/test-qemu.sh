#!/usr/bin/env bash
# Builds hearth for TARGET with image/build-binary.sh and runs it under qemu-user on
# this machine: it must start, create its database and let a client log in
# (tests/qemu_user.rs, an ignored cargo test). The emulated CPU is the Pi's oldest
# 64-bit core, so an instruction newer than Armv8.0-A ends the test with SIGILL.
#
#   image/test-qemu.sh [--install-deps] [--no-build] [TARGET]    (default aarch64)
#
# Needs qemu-user-static (Debian package), plus what build-binary.sh needs. Takes
# minutes (a release build with LTO), so CI runs it only when asked: HEARTH_CI_QEMU=1.
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
# The target's dynamic loader and libc: Debian's multiarch libc6:ARCH (a dependency of
# libstd-rust-web-dev:ARCH) where installed, as on a Pi. The libc6-*-cross copy under
# /usr/$gnu (2.36-8cross1 here) hangs in the first pthread_create under qemu 7.2.
loader=$(case "$target" in aarch64-*) echo /lib/ld-linux-aarch64.so.1 ;; *) echo /lib/ld-linux-armhf.so.3 ;; esac)
if [ -e "$loader" ]; then
  unset QEMU_LD_PREFIX
else
  echo "test-qemu.sh: $loader missing; using /usr/$gnu (may hang at the first thread)" >&2
  export QEMU_LD_PREFIX="/usr/$gnu"
fi
echo "==> $target: $(stat -c %s "$bin") bytes stripped, under $qemu with QEMU_CPU=$cpu"
cargo test --test qemu_user -- --ignored --nocapture
