//! Release builds link the server with `link/hot-code.ld`, which places the functions a
//! running server executes together, ahead of the rest of the code (bench/hot-code.sh
//! makes the list; BENCHMARKS.md, "Idle RSS", has what it saves).
//!
//! The script needs lld: GNU ld takes it too, but matches its thousands of patterns
//! against every section one by one and spends minutes on the link. So it is used by
//! default only where rustc links with its own lld, which is x86-64 Linux from rustc 1.90
//! on (unless another linker is configured). `HEARTH_HOT_CODE=1` asks for it elsewhere
//! (image/build-binary.sh links the aarch64 build with Debian's lld), `HEARTH_HOT_CODE=0`
//! leaves it out.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=link/hot-code.ld");
    println!("cargo::rerun-if-env-changed=HEARTH_HOT_CODE");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let wanted = match env::var("HEARTH_HOT_CODE").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => links_with_rust_lld(),
    };
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = Path::new(&dir).join("link").join("hot-code.ld");
    if wanted && release && script.is_file() {
        println!(
            "cargo::rustc-link-arg-bin=hearth=-Wl,-T,{}",
            script.display()
        );
    }
}

/// Whether the final link uses the lld that ships with rustc: the default for
/// x86_64-unknown-linux-gnu since rustc 1.90, when no other linker is configured.
fn links_with_rust_lld() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major > 1 || minor >= 90
}
