//! Times hearth's PLAIN check: one argon2id verification (m = 19456 KiB, t = 2, p = 1)
//! through `hearth::password::verify`, the code the checking threads run, in a reused
//! work area. For the Raspberry Pi figure in the README, cross-build it and run it under
//! qemu-user as a Cortex-A53 (timings under emulation are indicative only):
//!
//! ```text
//! image/build-binary.sh --example argon2_speed aarch64-unknown-linux-gnu
//! QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 -cpu cortex-a53 \
//!     target/debian-cross/aarch64-unknown-linux-gnu/release/examples/argon2_speed 5
//! ```
//!
//! Prints the first check (which also maps the work area) and the median of the others.

use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(2);
    let phc = match hearth::password::hash("correct horse battery staple") {
        Ok(phc) => phc,
        Err(e) => {
            eprintln!("argon2_speed: {e}");
            std::process::exit(1);
        }
    };
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        // Right and wrong passwords alternate: the work is the same.
        let ok = hearth::password::verify(
            Some(&phc),
            if i % 2 == 0 {
                "correct horse battery staple"
            } else {
                "wrong"
            },
        );
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if ok != Ok(i % 2 == 0) {
            eprintln!("argon2_speed: check {i} answered {ok:?}");
            std::process::exit(1);
        }
        times.push(ms);
    }
    let first = times[0];
    let mut rest = times[1..].to_vec();
    rest.sort_by(f64::total_cmp);
    let median = rest[rest.len() / 2];
    println!(
        "argon2id m=19456 t=2 p=1 verify: first {first:.1} ms, median of {} more {median:.1} ms",
        rest.len()
    );
}
