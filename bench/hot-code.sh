#!/usr/bin/env bash
# Regenerates link/hot-code.ld: the functions a running hearth executes, which the
# release link (build.rs) places together at the start of the code, ahead of the code a
# server rarely or never runs (CLI commands, error paths, unused library code).
#
#   bench/hot-code.sh            # about 3 minutes; needs valgrind, perf optional
#
# Why: the kernel maps a binary's code in 64 KiB windows (fault-around), or whole page
# cache folios on newer kernels. Executed functions scattered across 3.3 MiB of code
# kept nearly all of it resident; packed together they fit in about 1.5 MiB, and what
# runs at start-up in the first 0.7 MiB of that. BENCHMARKS.md ("Idle RSS") has the
# figures.
#
# How: an unstripped release build runs under valgrind's callgrind, which sees every
# function executed (not a sample). Its counters are dumped once 3 s after the server
# listens (start-up) and again at exit, after hearth-load has driven each benchmark
# scenario (idle, logins with each SASL mechanism and both TLS modes, chat, presence,
# offline, a group chat room, a photo upload) at small sizes. valgrind's emulated CPU
# lacks some instructions (SHA-NI, ADX), so libraries pick other code paths than on real
# hardware; when `perf` works, a second, native run of the same load is sampled and the
# functions seen there are added.
#
# The script lists each function twice: by its exact symbol name, and by a pattern with
# the toolchain-specific parts (legacy mangling's hash, v0 crate disambiguators)
# replaced by `*`. The exact names place this toolchain's functions precisely; the
# patterns still find them when a different rustc (Debian's, for the aarch64 build)
# names them differently. A function that no longer exists matches nothing and costs
# nothing, so a stale file only makes the packing less tight: re-run after changes to
# what the server executes, or after a toolchain update.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/link/hot-code.ld"
TARGET_DIR="$ROOT/target/hot-code"
PORT=${PORT:-25422}
WORK=$(mktemp -d /tmp/hearth-hot-code.XXXXXX)
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[hot-code] %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "valgrind is needed (apt-get install valgrind)"; exit 1; }

# Linked without the current list (HEARTH_HOT_CODE=0): valgrind names only the functions
# in a section called .text, so with a .text.hot section callgrind would see addresses.
log "building an unstripped release hearth and hearth-load"
(cd "$ROOT" && HEARTH_HOT_CODE=0 cargo build --release -q -p hearth -p hearth-bench \
    --config profile.release.strip=false --target-dir "$TARGET_DIR")
BIN="$TARGET_DIR/release/hearth"
LOAD="$TARGET_DIR/release/hearth-load"

sed -e "s#@WORK@#$WORK#; s#@PORT@#$PORT#; s#@HTTPPORT@#$((PORT + 5))#" \
    -e "s#^direct_tls_listen = \[\]#direct_tls_listen = [\"127.0.0.1:$((PORT + 1))\"]#" \
    "$ROOT/bench/peers/hearth.toml" >"$WORK/hearth.toml"
printf 'allow_root = true\n' | sed -i '/^mdns = false/r /dev/stdin' "$WORK/hearth.toml"
echo hot-code-password >"$WORK/password"
{
    "$LOAD" users 60 --user-pattern 'load{}'
    "$LOAD" users 24 --user-pattern 'pres{}'
    "$LOAD" users 10 --user-pattern 'off{}'
} | xargs -P 4 -I{} "$BIN" user add {} --password-file "$WORK/password" \
    --config "$WORK/hearth.toml" >/dev/null

wait_listening() {
    for _ in $(seq 200); do
        ss -ltn | grep -q "127.0.0.1:$PORT " && return 0
        sleep 0.1
    done
    log "hearth did not listen on $PORT"
    exit 1
}

# The load of every scenario, small: what matters is which code runs, not how fast.
drive() {
    local a=(--port "$PORT" --domain bench.local --password hot-code-password --timeout 120)
    "$LOAD" idle -k 40 -c 10 --hold 1 --users 60 "${a[@]}"
    "$LOAD" login -k 40 -c 10 --users 60 "${a[@]}"
    "$LOAD" login -k 10 -c 5 --users 60 --mech SCRAM-SHA-256 "${a[@]}"
    "$LOAD" login -k 10 -c 5 --users 60 --mech PLAIN "${a[@]}"
    "$LOAD" login -k 10 -c 5 --users 60 --tls direct "${a[@]}" --port $((PORT + 1))
    "$LOAD" chat -p 5 -w 4 -d 3 --warmup 1 "${a[@]}"
    "$LOAD" presence -g 4 -r 5 -d 3 --warmup 1 -c 5 --user-pattern 'pres{}' "${a[@]}"
    "$LOAD" offline -m 200 --senders 2 --recipients 5 -w 8 -c 5 --user-pattern 'off{}' "${a[@]}"
    "$LOAD" muc --occupants 10 -m 100 --senders 2 "${a[@]}"
    "$LOAD" upload --bytes 2000000 --runs 1 "${a[@]}"
}

# The first start makes the certificate, which later starts only load.
"$BIN" serve --config "$WORK/hearth.toml" >"$WORK/first.log" 2>&1 &
SERVER_PID=$!
wait_listening
kill "$SERVER_PID"
wait "$SERVER_PID" || true

log "callgrind: start-up, then each scenario"
valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" serve --config "$WORK/hearth.toml" >"$WORK/callgrind.log" 2>&1 &
SERVER_PID=$!
wait_listening
sleep 3
callgrind_control -d "$SERVER_PID" >/dev/null 2>&1 # -> callgrind.out.1: start-up only
drive >"$WORK/load-callgrind.log" 2>&1 || { log "hearth-load failed under callgrind"; tail "$WORK/load-callgrind.log" >&2; exit 1; }
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=""

PERF_OUT=""
if command -v perf >/dev/null && perf record -q -e cpu-clock:u -o "$WORK/probe.data" true >/dev/null 2>&1; then
    log "perf: the same load on the real CPU"
    perf record -q -e cpu-clock:u -c 20000 -o "$WORK/perf.data" \
        "$BIN" serve --config "$WORK/hearth.toml" >"$WORK/perf.log" 2>&1 &
    SERVER_PID=$!
    wait_listening
    drive >"$WORK/load-perf.log" 2>&1 || { log "hearth-load failed under perf"; exit 1; }
    kill -INT "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
    perf report -i "$WORK/perf.data" --no-demangle --stdio -q --sort dso,sym 2>/dev/null |
        awk '$2 == "hearth" && $3 == "[.]" {print $4}' >"$WORK/perf.syms"
    PERF_OUT="$WORK/perf.syms"
else
    log "perf is not usable here: start-up and callgrind's view only"
fi

python3 - "$WORK/callgrind.out.1" "$WORK/callgrind.out" "${PERF_OUT:-/dev/null}" "$OUT" <<'PY'
import re, sys

def executed(path):
    """Function names of the hearth binary that callgrind saw run, in first-seen order."""
    names, obj = [], None
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("fn=") and obj and obj.endswith("/hearth"):
            names.append(re.sub(r"'\d+$", "", line[3:].strip()))  # 'N: recursion depth
    return names

def unique(seq):
    seen = set()
    return [x for x in seq if not (x in seen or seen.add(x))]

start_cg, run_cg, perf_file, out = sys.argv[1:5]
start = unique(executed(start_cg))
run = unique(executed(run_cg) + [l.strip() for l in open(perf_file)])
# Names a linker script can take as they are (no spaces, parentheses, quotes).
ok = re.compile(r"(?!0x[0-9a-f]+$)[A-Za-z0-9_$.]+")  # and not an address valgrind could not name
start = [n for n in start if ok.fullmatch(n)]
started = set(start)
run = [n for n in run if ok.fullmatch(n) and n not in started]

def pattern(name):
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)  # legacy mangling: hash
    return re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)  # v0 mangling: crate disambiguator

def block(title, names):
    lines = [f"    /* {title} ({len(names)}) */", "    *("]
    lines += [f"      .text*.{n}" for n in names]
    return lines + ["    )"]

text = [
    "/* Generated by bench/hot-code.sh; used by build.rs for release builds on Linux.",
    "   The functions a running hearth executes, first those of start-up, placed in one",
    "   output section ahead of the rest of the code, so the pages that stay resident",
    "   hold code that runs. '.text*.' matches '.text.' and '.text.unlikely.'. */",
    "SECTIONS",
    "{",
    "  .text.hot : {",
]
text += block("start-up, exact names", start)
text += block("under load, exact names", run)
text += block("start-up, any toolchain", unique(p for p in map(pattern, start) if "*" in p))
text += block("under load, any toolchain", unique(p for p in map(pattern, run) if "*" in p))
text += ["  }", "}", "INSERT BEFORE .text;", ""]
open(out, "w").write("\n".join(text))
print(f"{out}: {len(start)} start-up and {len(run)} more functions", file=sys.stderr)
PY
