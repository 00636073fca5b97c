#!/usr/bin/env bash
# Cross-builds a release hearth for a Raspberry Pi without Docker, from Debian's own
# packages: Debian's rustc/cargo ("-web" builds, recent enough for edition 2024), the
# target's standard library as a foreign-architecture package, and a GNU cross gcc as
# driver and C compiler (ring's assembly, SQLite), Debian's lld as linker.
#
#   image/build-binary.sh [--install-deps] [--example NAME] TARGET
#
# --example NAME builds examples/NAME.rs instead of the server (e.g. argon2_speed, which
# times one PLAIN check: run it under qemu-aarch64 -cpu cortex-a53 for the README's figure).
#
# TARGET is one of
#   aarch64-unknown-linux-gnu       Pi 3, 4, 5, Zero 2 W on a 64-bit OS   (Debian arm64)
#   armv7-unknown-linux-gnueabihf   Pi 2, 3, 4 on a 32-bit ARMv7 OS       (Debian armhf)
#   arm-unknown-linux-gnueabihf     Pi 1 and Zero (ARMv6): Debian ships no std for it;
#                                   use cross (cross.toml) on a machine with Docker.
#
# --install-deps adds the foreign architecture and installs the packages (needs root);
# without it the script says what is missing. The binary lands in
# target/debian-cross/TARGET/release/hearth, stripped (Cargo.toml's release profile).
#
# Baseline CPU: no -C target-cpu beyond "generic" and no extra target features, so the
# binary runs on every board of the family. (Naming the Pi's own core, cortex-a53, would
# turn on the AES/SHA2 crypto extensions, which the Pi's Broadcom chips lack: SIGILL.)
# The script checks the target's compile-time features against that baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
example=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install-deps) install=1; shift ;;
    --example) example="${2:?--example needs a name}"; shift 2 ;;
    *) break ;;
  esac
done
target="${1:-}"
case "$target" in
  aarch64-unknown-linux-gnu)
    deb_arch=arm64 gnu=aarch64-linux-gnu
    baseline='neon' ;;
  armv7-unknown-linux-gnueabihf)
    deb_arch=armhf gnu=arm-linux-gnueabihf
    baseline='aclass dsp thumb-mode thumb2 v5te v6 v6k v6t2 v7 vfp2 vfp3 d32' ;;
  arm-unknown-linux-gnueabihf)
    echo "build-binary.sh: Debian's armhf standard library is ARMv7; ARMv6 (Pi 1, Zero) needs" >&2
    echo "  CROSS_CONFIG=cross.toml cross build --release --target $target" >&2
    echo "  on a machine with Docker or Podman (see README)." >&2
    exit 2 ;;
  *)
    echo "usage: image/build-binary.sh [--install-deps] aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
    exit 2 ;;
esac

packages=("gcc-$gnu" "libc6-dev-$deb_arch-cross" rustc-web cargo-web "libstd-rust-web-dev:$deb_arch" lld)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$install" = 0 ]; then
    echo "build-binary.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  run with --install-deps (as root), or: dpkg --add-architecture $deb_arch &&" \
      "apt-get update && apt-get install ${missing[*]}" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO dpkg --add-architecture "$deb_arch"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's toolchain, whatever rustup has put first on PATH: the foreign std package
# matches Debian's rustc exactly and no other.
export RUSTC=/usr/bin/rustc
CARGO=/usr/bin/cargo
# Nothing from the caller's environment may raise the baseline (e.g. target-cpu=native).
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
T=$(echo "$target" | tr 'a-z-' 'A-Z_')
t=$(echo "$target" | tr '-' '_')
export "CARGO_TARGET_${T}_LINKER=$gnu-gcc"
# Linked by lld, which takes link/hot-code.ld (the code a running server executes,
# packed together: less of the binary resident) in seconds; GNU ld needs minutes for it.
# The cross gcc looks for lld under its own name or in a -B directory.
lld_dir="$PWD/target/debian-cross/lld"
mkdir -p "$lld_dir"
ln -sf "$(command -v ld.lld)" "$lld_dir/ld.lld"
export "CARGO_TARGET_${T}_RUSTFLAGS=-C target-cpu=generic -C link-arg=-fuse-ld=lld -C link-arg=-B$lld_dir"
export HEARTH_HOT_CODE=1
export "CC_${t}=$gnu-gcc" "AR_${t}=$gnu-ar"
export CARGO_TARGET_DIR=target/debian-cross

# The baseline check: every compile-time target feature must be in the list above.
extra=$("$RUSTC" --print cfg --target "$target" -C target-cpu=generic |
  sed -n 's/^target_feature="\(.*\)"$/\1/p' |
  while read -r f; do case " $baseline " in *" $f "*) ;; *) echo "$f" ;; esac; done)
if [ -n "$extra" ]; then
  echo "build-binary.sh: $target would be built with features beyond the baseline: $extra" >&2
  exit 1
fi

echo "==> $("$RUSTC" --version), $("$CARGO" --version), target $target"
start=$(date +%s)
"$CARGO" build --release --locked --target "$target" ${example:+--example "$example"}
bin="$CARGO_TARGET_DIR/$target/release/${example:+examples/$example}"
[ -n "$example" ] || bin="$CARGO_TARGET_DIR/$target/release/hearth"
echo "==> built in $(( $(date +%s) - start ))s: $bin"
file -L "$bin" 2>/dev/null || true
echo "==> size: $(stat -c %s "$bin") bytes"
