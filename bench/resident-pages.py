#!/usr/bin/env python3
# Which parts of a running hearth's binary are resident, by crate and by ELF section.
#
#   bench/resident-pages.py PID UNSTRIPPED_BINARY
#
# Reads /proc/PID/pagemap (root) for the binary's mappings, maps each resident page to
# the symbols of UNSTRIPPED_BINARY (the same code built with
# `cargo build --release --config profile.release.strip=false`; the running binary may be
# its stripped copy) and prints KiB per crate and resident pages per section. The kernel
# maps up to 64 KiB of cached pages around each fault, so a page counts when anything
# near it ran. BENCHMARKS.md ("Idle RSS") has what it showed.
import sys, re, struct, subprocess, collections
pid, binpath = sys.argv[1], sys.argv[2]
PAGE = 4096
# Resident file pages of the binary.
maps = []
for line in open(f'/proc/{pid}/maps'):
    f = line.split()
    if len(f) >= 6 and f[5] == binpath or (len(f)>=6 and f[5].endswith('/hearth')):
        lo, hi = (int(x, 16) for x in f[0].split('-'))
        maps.append((lo, hi, int(f[2], 16), f[1]))
resident_offsets = set()
with open(f'/proc/{pid}/pagemap', 'rb') as pm:
    for lo, hi, off, perm in maps:
        pm.seek(lo // PAGE * 8)
        data = pm.read((hi - lo) // PAGE * 8)
        for i in range((hi - lo) // PAGE):
            (e,) = struct.unpack_from('<Q', data, i * 8)
            if e >> 63 & 1:
                resident_offsets.add(off + i * PAGE)
print('resident pages', len(resident_offsets), 'KiB', len(resident_offsets) * 4)
# LOAD segments: offset -> vaddr
segs = []
out = subprocess.run(['readelf', '-lW', binpath], capture_output=True, text=True).stdout
for l in out.splitlines():
    l = l.split()
    if l and l[0] == 'LOAD':
        segs.append((int(l[1], 16), int(l[2], 16), int(l[4], 16)))  # offset, vaddr, filesz
def vaddr(off):
    for o, v, sz in segs:
        if o <= off < o + sz: return v + off - o
    return None
# symbols
syms = []
for l in subprocess.run(['nm', '-S', '-C', binpath], capture_output=True, text=True).stdout.splitlines():
    p = l.split(' ', 3)
    if len(p) < 4: continue
    try: a, s = int(p[0], 16), int(p[1], 16)
    except ValueError: continue
    syms.append((a, s, p[3]))
syms.sort()
def crate(name):
    n = name.lstrip('<_&')
    m = re.match(r'(?:impl )?(?:dyn )?([a-zA-Z_][a-zA-Z0-9_]*)::', n)
    if m: return m.group(1)
    if 'ring_core' in name or name.startswith(('ecp_','fe_','ge_','x25519','sc_','chacha','aes','gcm','p256','p384','bn_','LIMBS','OPENSSL')): return 'ring(C)'
    return 'C(sqlite/libc glue)'
import bisect
addrs = [s[0] for s in syms]
agg = collections.Counter(); unknown = 0
for off in resident_offsets:
    v = vaddr(off)
    if v is None: unknown += PAGE; continue
    lo, hi = v, v + PAGE
    i = bisect.bisect_right(addrs, lo) - 1
    covered = 0
    i = max(i, 0)
    while i < len(syms) and syms[i][0] < hi:
        a, s, n = syms[i]
        ov = min(hi, a + s) - max(lo, a)
        if ov > 0: agg[crate(n)] += ov; covered += ov
        i += 1
    agg['(no symbol: headers, eh_frame, padding)'] += PAGE - covered
for k, v in agg.most_common(30): print(f'{v/1024:8.1f} KiB  {k}')
print('unmapped', unknown)
# per section
secs=[]
for l in subprocess.run(['readelf','-SW',binpath],capture_output=True,text=True).stdout.splitlines():
    m=re.match(r'\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)',l)
    if m and int(m.group(2),16): secs.append((m.group(1),int(m.group(3),16),int(m.group(4),16)))
for name,off,size in secs:
    pages=[p for p in resident_offsets if p+PAGE>off and p<off+size]
    tot=(size+PAGE-1)//PAGE
    print(f'{name:20s} size {size/1024:8.1f} KiB resident pages {len(pages)}/{tot}')
