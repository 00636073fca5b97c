//! Page sizes of the boards hearth's binaries run on. The Raspberry Pi 5 runs its
//! 64-bit OS on a kernel with 16 KiB pages (Raspberry Pi OS's `kernel_2712.img`), other
//! arm64 kernels use 4 KiB or 64 KiB: a binary loads on all of them only if every
//! `PT_LOAD` segment can be mapped on pages of 64 KiB.
//!
//! What the kernel's ELF loader (`load_elf_binary`, `elf_map`) and glibc's `ld.so`
//! need, for a page size P (ELF gABI, "Program Loading"):
//!
//! - `p_align` a multiple of P (ld.so refuses a library otherwise: "ELF load command
//!   alignment not page-aligned");
//! - `p_vaddr ≡ p_offset (mod P)`: a segment is mapped from the file a whole page at a
//!   time (`mmap` takes page-aligned offsets);
//! - no two segments in one page of memory: the second `MAP_FIXED` mapping would replace
//!   the end of the first, e.g. make the last code page writable data and not executable.
//!
//! The rules are checked here on headers built by hand (always run), and on the
//! cross-built aarch64 hearth (linked with `link/hot-code.ld` by Debian's lld) by an
//! ignored test that `image/test-qemu.sh` runs after the build, as it does
//! `tests/qemu_user.rs`.

use std::path::PathBuf;

const PT_LOAD: u32 = 1;
const EM_ARM: u16 = 40;
const EM_AARCH64: u16 = 183;

/// One loadable segment, as in an ELF program header.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load {
    offset: u64,
    vaddr: u64,
    memsz: u64,
    align: u64,
    /// PF_R = 4, PF_W = 2, PF_X = 1; only printed.
    flags: u32,
}

/// The machine (`e_machine`) and the `PT_LOAD` segments of a little-endian ELF file
/// (32- or 64-bit). Errors name what is wrong instead of panicking on a short or odd file.
fn loads(elf: &[u8]) -> Result<(u16, Vec<Load>), String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("file ends before offset {at}"))
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("file ends before offset {at}"))
    };
    let u64_at = |at: usize| -> Result<u64, String> {
        let lo = u64::from(u32_at(at)?);
        let hi = u64::from(u32_at(at + 4)?);
        Ok(lo | (hi << 32))
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(5) != Some(&1) {
        return Err("not little-endian".into());
    }
    let is_64 = match elf.get(4) {
        Some(1) => false,
        Some(2) => true,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if is_64 {
        (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?)
    } else {
        (u64::from(u32_at(0x1c)?), u16_at(0x2a)?, u16_at(0x2c)?)
    };
    let phoff = usize::try_from(phoff).map_err(|_| "program headers out of reach")?;
    let mut out = Vec::new();
    for i in 0..usize::from(phnum) {
        let at = phoff + i * usize::from(phentsize);
        if u32_at(at)? != PT_LOAD {
            continue;
        }
        out.push(if is_64 {
            Load {
                flags: u32_at(at + 4)?,
                offset: u64_at(at + 8)?,
                vaddr: u64_at(at + 16)?,
                memsz: u64_at(at + 40)?,
                align: u64_at(at + 48)?,
            }
        } else {
            Load {
                offset: u64::from(u32_at(at + 4)?),
                vaddr: u64::from(u32_at(at + 8)?),
                memsz: u64::from(u32_at(at + 20)?),
                flags: u32_at(at + 24)?,
                align: u64::from(u32_at(at + 28)?),
            }
        });
    }
    Ok((machine, out))
}

/// Whether the segments load on a kernel whose pages are `page` bytes (a power of two);
/// the error names the first segment that does not.
fn check_page_size(segments: &[Load], page: u64) -> Result<(), String> {
    if segments.is_empty() {
        return Err("no PT_LOAD segment".into());
    }
    let mut sorted = segments.to_vec();
    sorted.sort_by_key(|l| l.vaddr);
    for (i, l) in sorted.iter().enumerate() {
        if l.align == 0 || l.align % page != 0 {
            return Err(format!(
                "segment at {:#x}: p_align {:#x} is not a multiple of {page:#x}",
                l.vaddr, l.align
            ));
        }
        if l.vaddr % page != l.offset % page {
            return Err(format!(
                "segment at {:#x}: file offset {:#x} is not congruent to it modulo {page:#x}",
                l.vaddr, l.offset
            ));
        }
        if let Some(next) = sorted.get(i + 1) {
            let last_page = (l.vaddr + l.memsz.max(1) - 1) / page;
            if last_page >= next.vaddr / page {
                return Err(format!(
                    "segments at {:#x} and {:#x} share a page of {page:#x} bytes",
                    l.vaddr, next.vaddr
                ));
            }
        }
    }
    Ok(())
}

fn seg(offset: u64, vaddr: u64, memsz: u64, align: u64) -> Load {
    Load {
        offset,
        vaddr,
        memsz,
        align,
        flags: 4,
    }
}

/// The layout lld gave the aarch64 hearth (`readelf -lW`): read-only data, code, RELRO
/// data, data. Loads on 4, 16 and 64 KiB pages.
#[test]
fn lld_aarch64_layout_loads_on_every_page_size() {
    let segs = [
        seg(0, 0, 0x13d46c, 0x10000),
        seg(0x13d470, 0x14d470, 0x3d1c60, 0x10000),
        seg(0x50f0d0, 0x52f0d0, 0x14000, 0x10000),
        seg(0x5230d0, 0x5530d0, 0x4128, 0x10000),
    ];
    for page in [0x1000, 0x4000, 0x10000] {
        assert_eq!(check_page_size(&segs, page), Ok(()), "page {page:#x}");
    }
}

/// A binary linked for 4 KiB pages (`-z max-page-size=4096`, the x86-64 default): fine
/// on a Pi 4's kernel, refused on a Pi 5's.
#[test]
fn four_kib_alignment_fails_on_16k_pages() {
    let segs = [
        seg(0, 0, 0x1234, 0x1000),
        seg(0x1234, 0x2234, 0x800, 0x1000),
    ];
    assert_eq!(check_page_size(&segs, 0x1000), Ok(()));
    let err = check_page_size(&segs, 0x4000).unwrap_err();
    assert!(err.contains("p_align 0x1000"), "{err}");
}

/// Aligned, but the code's last page is the data's first: on 16 KiB pages the data
/// mapping would replace the end of the code.
#[test]
fn segments_sharing_a_16k_page_fail() {
    let segs = [
        seg(0, 0, 0x5000, 0x10000),
        seg(0x7000, 0x7000, 0x100, 0x10000),
    ];
    assert_eq!(check_page_size(&segs, 0x1000), Ok(()));
    let err = check_page_size(&segs, 0x4000).unwrap_err();
    assert!(err.contains("share a page"), "{err}");
}

/// Offset and address that agree modulo 4 KiB only: mmap could not map it on 16 KiB.
#[test]
fn offset_congruent_only_modulo_4k_fails() {
    let segs = [
        seg(0, 0, 0x100, 0x10000),
        seg(0x1100, 0x12100, 0x100, 0x10000),
    ];
    let err = check_page_size(&segs, 0x4000).unwrap_err();
    assert!(err.contains("not congruent"), "{err}");
}

#[test]
fn parser_rejects_what_is_not_an_elf_file() {
    assert_eq!(loads(b"#!/bin/sh\n").unwrap_err(), "not an ELF file");
    let mut short = b"\x7fELF\x02\x01\x01".to_vec();
    short.resize(20, 0);
    assert!(loads(&short).unwrap_err().contains("file ends"));
    assert!(check_page_size(&[], 0x1000).is_err());
}

/// The parser against a binary that certainly exists: this test program itself, for
/// whatever machine runs the tests (its segments load on this machine's pages).
#[test]
fn parser_reads_this_test_binary() {
    let exe = std::env::current_exe().expect("own path");
    let bytes = std::fs::read(&exe).expect("own binary");
    let (_, segs) = loads(&bytes).expect("an ELF file");
    assert!(segs.len() >= 2, "{segs:?}");
    assert_eq!(check_page_size(&segs, 0x1000), Ok(()));
}

/// The cross-built binary (`HEARTH_CROSS_BINARY`, set by image/test-qemu.sh): an aarch64
/// hearth must load with 16 KiB and 64 KiB pages, an armv7 one (whose kernels have
/// 4 KiB pages) with 4 KiB.
#[test]
#[ignore = "needs a cross-built binary: image/test-qemu.sh"]
fn cross_built_hearth_loads_on_the_boards_page_sizes() {
    let path = PathBuf::from(
        std::env::var_os("HEARTH_CROSS_BINARY")
            .expect("HEARTH_CROSS_BINARY is not set; run image/test-qemu.sh TARGET"),
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (machine, segs) = loads(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for l in &segs {
        println!(
            "PT_LOAD offset {:#08x} vaddr {:#08x} memsz {:#08x} align {:#x} flags {}",
            l.offset, l.vaddr, l.memsz, l.align, l.flags
        );
    }
    let pages: &[u64] = match machine {
        EM_AARCH64 => &[0x1000, 0x4000, 0x10000],
        EM_ARM => &[0x1000],
        other => panic!("{}: e_machine {other}, not an ARM binary", path.display()),
    };
    for &page in pages {
        check_page_size(&segs, page)
            .unwrap_or_else(|e| panic!("{} on {page:#x}-byte pages: {e}", path.display()));
        println!("loads on {} KiB pages", page / 1024);
    }
}
