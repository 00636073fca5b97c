#!/usr/bin/env bash
# bench/compare.sh: hearth beside Prosody and ejabberd, same machine, same load, same run.
#
# Installs Debian's prosody and ejabberd if missing (their packaged services are stopped),
# builds hearth and hearth-load in release mode, starts each server on loopback with the
# configuration in bench/peers/, creates the same accounts on all three, runs the same
# hearth-load scenarios against each and prints one table with the ratio hearth/better peer.
# See bench/README.md ("Comparing with Prosody and ejabberd") and BENCHMARKS.md.
#
# Usage: bench/compare.sh [options]
#   --users N        accounts created on each server                  [1000]
#   --login-k K      logins in the login scenario                     [1000]
#   --idle-k K       sessions held in the idle scenario               [1000]
#   --idle10k        also hold 10,000 idle sessions (fresh process; several minutes)
#   --login-runs R   login runs per server, the median is reported    [3]
#   --chat-runs R    chat runs per server, the median is reported     [3]
#   --chat-secs D    measured seconds per chat run                    [10]
#   --pairs P        chat pairs                                       [8]
#   --window W       chat messages in flight per pair                 [16]
#   --presence-groups G   presence: groups of R+1 mutual contacts, one cycler each [10]
#   --presence-roster R   presence: contacts per roster                 [20]
#   --presence-secs D     presence: measured seconds                    [10]
#   --offline-messages M  offline: messages stored, then delivered      [10000]
#   --offline-recipients N  offline: offline recipients (M/N <= 500)    [100]
#   --offline-senders S   offline: online senders                       [10]
#   --offline-window W    offline: unanswered messages per sender       [32]
#   --scenarios LIST comma-separated subset of idle,login,chat,presence,offline,
#                    plainlogin,plainflood [idle,login,chat,presence,offline]
#                    plainlogin: the login scenario with SASL PLAIN (LOGIN_RUNS runs);
#                    plainflood: on a fresh process, --flood-k PLAIN attempts at
#                    --flood-c at once, half right, half wrong for unknown accounts,
#                    server RSS sampled during and --flood-after seconds after
#   --flood-k K      PLAIN attempts in plainflood                     [1000]
#   --flood-c C      plainflood concurrency                           [200]
#   --flood-after S  seconds RSS is watched after the flood           [15]
#   --cert TYPE      ecdsa (P-256; hearth makes its own) or rsa (one RSA-2048 certificate
#                    for all three servers, hearth included)          [ecdsa]
#   --port-base P    hearth listens on P, Prosody on P+10, ejabberd on P+20 [25222]
#   --servers LIST   comma-separated subset of hearth,prosody,ejabberd [all three]
#   --no-build       use the existing target/release binaries
#   --keep           keep the work directory (configs, logs, raw JSON) and print its path
#   --json FILE      also copy every raw result (one JSON object per line) to FILE
#
# Needs root (apt-get, and running the peers as their own system users with setpriv).
# Everything runs on 127.0.0.1; every loop is bounded; every process started here is
# stopped on exit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/bench/peers"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HEARTH="$TARGET_DIR/release/hearth"
LOAD="$TARGET_DIR/release/hearth-load"

USERS=1000
LOGIN_K=1000
IDLE_K=1000
IDLE10K=0
LOGIN_RUNS=3
CHAT_RUNS=3
CHAT_SECS=10
PAIRS=8
WINDOW=16
SERVERS="hearth,prosody,ejabberd"
SCENARIOS="idle,login,chat,presence,offline"
PRES_GROUPS=10
PRES_ROSTER=20
PRES_SECS=10
OFF_MESSAGES=10000
OFF_RECIPIENTS=100
OFF_SENDERS=10
OFF_WINDOW=32
PORT_BASE=25222
BUILD=1
KEEP=0
JSON_OUT=""
LOGIN_C=50
IDLE_C=50
DOMAIN=bench.local
FLOOD_K=1000
FLOOD_C=200
FLOOD_AFTER=15
CERT=ecdsa

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --login-k) LOGIN_K=$2; shift 2 ;;
        --idle-k) IDLE_K=$2; shift 2 ;;
        --idle10k) IDLE10K=1; shift ;;
        --login-runs) LOGIN_RUNS=$2; shift 2 ;;
        --chat-runs) CHAT_RUNS=$2; shift 2 ;;
        --chat-secs) CHAT_SECS=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --presence-groups) PRES_GROUPS=$2; shift 2 ;;
        --presence-roster) PRES_ROSTER=$2; shift 2 ;;
        --presence-secs) PRES_SECS=$2; shift 2 ;;
        --offline-messages) OFF_MESSAGES=$2; shift 2 ;;
        --offline-recipients) OFF_RECIPIENTS=$2; shift 2 ;;
        --offline-senders) OFF_SENDERS=$2; shift 2 ;;
        --offline-window) OFF_WINDOW=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --flood-k) FLOOD_K=$2; shift 2 ;;
        --flood-c) FLOOD_C=$2; shift 2 ;;
        --flood-after) FLOOD_AFTER=$2; shift 2 ;;
        --cert) CERT=$2; shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --json) JSON_OUT=$2; shift 2 ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
for n in USERS LOGIN_K IDLE_K LOGIN_RUNS CHAT_RUNS CHAT_SECS PAIRS WINDOW PRES_GROUPS \
    PRES_ROSTER PRES_SECS OFF_MESSAGES OFF_RECIPIENTS OFF_SENDERS OFF_WINDOW PORT_BASE \
    FLOOD_K FLOOD_C FLOOD_AFTER; do
    [[ ${!n} =~ ^[0-9]+$ ]] && [ "${!n}" -gt 0 ] || die "$n must be a positive integer"
done
[ $((2 * PAIRS)) -le "$USERS" ] || die "--pairs needs 2*P accounts (--users)"
[ $(((OFF_MESSAGES + OFF_RECIPIENTS - 1) / OFF_RECIPIENTS)) -le 500 ] ||
    die "--offline-messages / --offline-recipients must stay <= 500 (stored-message quotas)"
declare -A PORT=([hearth]=$PORT_BASE [prosody]=$((PORT_BASE + 10)) [ejabberd]=$((PORT_BASE + 20)))
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
    [[ $s =~ ^(idle|login|chat|presence|offline|plainlogin|plainflood)$ ]] || die "unknown scenario $s"
done
[[ $CERT =~ ^(ecdsa|rsa)$ ]] || die "--cert is ecdsa or rsa"
want() { [[ ,$SCENARIOS, == *,$1,* ]]; }
# Accounts of their own for presence (rosters) and offline, so the other scenarios (and
# --idle10k) log in accounts without contacts or stored messages.
PRES_USERS=$((PRES_GROUPS * (PRES_ROSTER + 1)))
OFF_USERS=$((OFF_SENDERS + OFF_RECIPIENTS))
IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
for s in "${SERVER_LIST[@]}"; do
    [[ $s =~ ^(hearth|prosody|ejabberd)$ ]] || die "unknown server $s"
done
[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, setpriv to the peers' users)"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- work dir and cleanup
WORK=$(mktemp -d /tmp/hearth-compare.XXXXXX)
chmod 755 "$WORK"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
SERVER_PID=""
SERVER_NAME=""
BG_PIDS=()

stop_pid() { # pid: TERM, wait up to 15 s, then KILL; reaps it (it is our child)
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 150); do
        [ -e "/proc/$pid" ] || break
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
    local p
    for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- install and build
need_install=()
for s in "${SERVER_LIST[@]}"; do
    case $s in
        prosody) command -v prosody >/dev/null || need_install+=(prosody) ;;
        ejabberd) [ -x /usr/sbin/ejabberdctl ] || need_install+=(ejabberd) ;;
    esac
done
if [ ${#need_install[@]} -gt 0 ]; then
    log "installing ${need_install[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_install[@]}" >"$WORK/apt.log" 2>&1 ||
        die "apt-get install failed, see $WORK/apt.log"
fi
# The packages start their own service: stop it so it neither listens nor uses CPU here.
# (Found with pgrep: none of ours runs yet, and `service ejabberd status` would start epmd.)
if pgrep -u prosody >/dev/null 2>&1; then
    log "stopping the packaged prosody service"
    service prosody stop >/dev/null 2>&1 || true
fi
if pgrep -u ejabberd beam.smp >/dev/null 2>&1; then
    log "stopping the packaged ejabberd service"
    service ejabberd stop >/dev/null 2>&1 || true
fi

if [ "$BUILD" = 1 ]; then
    log "building hearth and hearth-load (release)"
    (cd "$ROOT" && cargo build --release -q -p hearth -p hearth-bench) || die "build failed"
fi
[ -x "$HEARTH" ] && [ -x "$LOAD" ] || die "missing $HEARTH or $LOAD (drop --no-build)"
# Run copies, so a rebuild in the tree during the run changes nothing measured.
mkdir -p "$WORK/bin"
cp "$HEARTH" "$LOAD" "$WORK/bin/"
HEARTH="$WORK/bin/hearth"
LOAD="$WORK/bin/hearth-load"
chmod 755 "$WORK/bin" "$HEARTH" "$LOAD"

for s in "${SERVER_LIST[@]}"; do
    if ss -Hltn "sport = :${PORT[$s]}" | grep -q .; then
        die "port ${PORT[$s]} (for $s) is already in use"
    fi
done

NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ "$IDLE10K" = 1 ] && [ "$NOFILE" -lt 10100 ]; then
    die "--idle10k needs an open-file hard limit above 10100 (it is $NOFILE)"
fi

# ---------------------------------------------------------------- shared material
# One password for every account on every server, no newline (hearth reads the first line;
# Prosody would refuse a newline under SASLprep).
PASSWORD="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$PASSWORD" >"$WORK/password"
chmod 644 "$WORK/password"

# ecdsa: one ECDSA P-256 certificate for both peers; hearth generates its own (also
# P-256). rsa: one RSA-2048 certificate for all three (a TLS handshake signs with it, so
# the key type changes login cost a lot: PEERS.md).
if [ "$CERT" = rsa ]; then
    KEYGEN=(-newkey rsa:2048)
else
    KEYGEN=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
fi
openssl req -x509 "${KEYGEN[@]}" -nodes -days 7 \
    -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
    -keyout "$WORK/peer-key.pem" -out "$WORK/peer-cert.pem" >/dev/null 2>&1 ||
    die "openssl could not make the certificate"
cat "$WORK/peer-cert.pem" "$WORK/peer-key.pem" >"$WORK/peer.pem"
chmod 644 "$WORK"/peer*.pem
mkdir -p "$WORK/certs"

render() { # template -> $WORK/name with @WORK@ and @PORT@ filled in
    sed -e "s#@WORK@#$WORK#g" -e "s#@PORT@#$2#g" "$PEERS/$1" >"$WORK/$1"
}
render hearth.toml "${PORT[hearth]}"
if [ "$CERT" = rsa ]; then
    # The template ends with [limits]; a [tls] table after it is still valid TOML.
    printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$WORK/peer-cert.pem" "$WORK/peer-key.pem" \
        >>"$WORK/hearth.toml"
fi
render prosody.cfg.lua "${PORT[prosody]}"
render ejabberd.yml "${PORT[ejabberd]}"
mkdir -p "$WORK/hearth" "$WORK/prosody/data" "$WORK/ejabberd/spool"
chown -R prosody:prosody "$WORK/prosody" 2>/dev/null || true
chown -R ejabberd:ejabberd "$WORK/ejabberd" 2>/dev/null || true

# ---------------------------------------------------------------- servers
# start_server NAME: starts it in the background as SERVER_PID, waits until its port
# listens (polling `ss`, so no connection is made) and sets STARTUP_MS.
start_server() {
    local name=$1 port=${PORT[$1]} t0 i
    t0=$(date +%s%N)
    case $name in
        hearth)
            # As `nobody`: hearth refuses to serve as root (and the peers run as their users).
            (ulimit -n "$NOFILE"; RUST_LOG=warn exec setpriv --reuid nobody \
                --regid "$(id -g nobody)" --clear-groups "$HEARTH" serve --config "$WORK/hearth.toml") \
                >>"$WORK/hearth/out.log" 2>&1 &
            ;;
        prosody)
            (ulimit -n "$NOFILE"; exec setpriv --reuid prosody --regid prosody --init-groups \
                prosody -F --config "$WORK/prosody.cfg.lua") >>"$WORK/prosody/out.log" 2>&1 &
            ;;
        ejabberd)
            # Started like `ejabberdctl foreground` does, but without su (PAM would reset
            # the open-file limit to 1024) and without Erlang distribution (so no epmd);
            # +sbwt none: schedulers do not busy-wait, which would inflate CPU figures;
            # nodelay on accepted sockets, as hearth and Prosody (nagle = false) have.
            (
                ulimit -n "$NOFILE"
                cd "$WORK/ejabberd"
                export EJABBERD_CONFIG_PATH="$WORK/ejabberd.yml" \
                    EJABBERD_LOG_PATH="$WORK/ejabberd/ejabberd.log" \
                    ERL_LIBS=/usr/lib/x86_64-linux-gnu ERL_MAX_PORTS=32000 \
                    ERL_CRASH_DUMP="$WORK/ejabberd/erl_crash.dump" HOME="$WORK/ejabberd"
                exec setpriv --reuid ejabberd --regid ejabberd --init-groups /usr/bin/erl \
                    +K true +P 250000 +sbwt none +sbwtdcpu none +sbwtdio none -noinput \
                    -kernel inet_default_listen_options '[{nodelay,true}]' \
                    -mnesia dir "\"$WORK/ejabberd/spool\"" -s ejabberd
            ) >>"$WORK/ejabberd/out.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    SERVER_NAME=$name
    for i in $(seq 1 3000); do # 3000 x ~10 ms
        ss -Hltn "sport = :$port" | grep -q . && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start; see $WORK/$name/"
        sleep 0.005
    done
    ss -Hltn "sport = :$port" | grep -q . || die "$name did not listen on $port within 30 s"
    STARTUP_MS=$((($(date +%s%N) - t0) / 1000000))
}

stop_server() {
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
    SERVER_PID=""
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# record SERVER KIND JSON: keeps a raw result, tagged with the server and what it measured.
record() {
    jq -e . >/dev/null 2>&1 <<<"$3" || die "$1 $2: no result (see $WORK/$1/load.log)"
    jq -c --arg s "$1" --arg k "$2" '. + {server: $s, kind: $k}' <<<"$3" >>"$RESULTS"
}

# load SERVER ARGS...: runs hearth-load against the current server, returns its JSON line.
load() {
    local name=$1
    shift
    echo "== hearth-load $*" >>"$WORK/$name/load.log"
    "$LOAD" "$@" --port "${PORT[$name]}" --domain "$DOMAIN" --password "$PASSWORD" \
        --server-pid "$SERVER_PID" --scram-cache "$WORK/$name.scram-cache" \
        >>"$WORK/$name/load.log" 2>&1 || true
    tail -n 1 "$WORK/$name/load.log"
}

# ---------------------------------------------------------------- accounts
# Account sets as PATTERN:COUNT: load{} for idle/login/chat, pres{} and off{} for the
# presence and offline scenarios.
ACCOUNT_SETS=("load{}:$USERS")
want presence && ACCOUNT_SETS+=("pres{}:$PRES_USERS")
want offline && ACCOUNT_SETS+=("off{}:$OFF_USERS")
TOTAL_USERS=0
for set in "${ACCOUNT_SETS[@]}"; do TOTAL_USERS=$((TOTAL_USERS + ${set#*:})); done

create_accounts() {
    local name=$1 set
    case $name in
        hearth)
            # Offline, before the server starts: one argon2id hash per account, so in parallel.
            # Runs in the background: on TERM (cleanup) stop xargs, which starts no more.
            local xp
            for set in "${ACCOUNT_SETS[@]}"; do
                "$LOAD" users "${set#*:}" --user-pattern "${set%%:*}"
            done | xargs -P 4 -I{} "$HEARTH" user add {} \
                --password-file "$WORK/password" --config "$WORK/hearth.toml" \
                >"$WORK/hearth/useradd.log" 2>&1 &
            xp=$!
            trap 'kill -TERM $xp 2>/dev/null; exit 1' TERM
            wait $xp || die "hearth user add failed; see $WORK/hearth/useradd.log"
            local n
            n=$("$HEARTH" user list --config "$WORK/hearth.toml" 2>/dev/null | grep -c .)
            [ "$n" -ge "$TOTAL_USERS" ] || die "hearth has $n accounts, wanted $TOTAL_USERS"
            ;;
        prosody | ejabberd)
            for set in "${ACCOUNT_SETS[@]}"; do
                python3 "$PEERS/register.py" register --port "${PORT[$name]}" \
                    --domain "$DOMAIN" --pattern "${set%%:*}" --count "${set#*:}" \
                    --password-file "$WORK/password" --threads 8 ||
                    die "registering accounts on $name failed"
            done
            ;;
    esac
}

# ---------------------------------------------------------------- the run
log "work directory $WORK; load average $(cut -d' ' -f1-3 /proc/loadavg)"
HEARTH_USERS_PID=""
if [[ ,$SERVERS, == *,hearth,* ]]; then
    log "hearth: creating $TOTAL_USERS accounts (background)"
    create_accounts hearth &
    HEARTH_USERS_PID=$!
    BG_PIDS+=("$HEARTH_USERS_PID")
fi
for s in "${SERVER_LIST[@]}"; do
    [ "$s" = hearth ] && continue
    log "$s: creating $TOTAL_USERS accounts (XEP-0077)"
    start_server "$s"
    create_accounts "$s"
    python3 "$PEERS/register.py" probe --port "${PORT[$s]}" --domain "$DOMAIN" \
        >"$WORK/$s/scram-probe.txt" 2>&1 || true
    stop_server
done
if [ -n "$HEARTH_USERS_PID" ]; then
    wait "$HEARTH_USERS_PID" || die "creating hearth accounts failed"
    BG_PIDS=()
    chown -R nobody "$WORK/hearth/data" # made by `hearth user add` as root
    # A first start makes hearth's certificate, so the timed starts below do not include it.
    start_server hearth
    python3 "$PEERS/register.py" probe --port "${PORT[hearth]}" --domain "$DOMAIN" \
        >"$WORK/hearth/scram-probe.txt" 2>&1 || true
    stop_server
fi

for s in "${SERVER_LIST[@]}"; do
    log "$s: fresh start; scenarios $SCENARIOS"
    start_server "$s"
    sleep 3 # let it settle (ejabberd finishes starting modules after it listens)
    record "$s" start "{\"startup_ms\":$STARTUP_MS,\"rss_after_start_kib\":$(rss_kib "$SERVER_PID")}"
    if want idle; then
        record "$s" idle "$(load "$s" idle -k "$IDLE_K" -c "$IDLE_C" --hold 2 --users "$USERS")"
    fi
    if want login; then
        for r in $(seq 1 "$LOGIN_RUNS"); do
            record "$s" login "$(load "$s" login -k "$LOGIN_K" -c "$LOGIN_C" --users "$USERS")"
        done
    fi
    if want chat; then
        for r in $(seq 1 "$CHAT_RUNS"); do
            record "$s" chat "$(load "$s" chat -p "$PAIRS" -w "$WINDOW" -d "$CHAT_SECS" --warmup 2)"
        done
    fi
    if want presence; then
        # The roster set-up (not timed) runs first, inside the same hearth-load call.
        record "$s" presence "$(load "$s" presence -g "$PRES_GROUPS" -r "$PRES_ROSTER" \
            -d "$PRES_SECS" --warmup 2 -c "$LOGIN_C" --user-pattern 'pres{}')"
    fi
    if want offline; then
        record "$s" offline "$(load "$s" offline -m "$OFF_MESSAGES" --senders "$OFF_SENDERS" \
            --recipients "$OFF_RECIPIENTS" -w "$OFF_WINDOW" -c "$LOGIN_C" --user-pattern 'off{}')"
    fi
    if want plainlogin; then
        for r in $(seq 1 "$LOGIN_RUNS"); do
            record "$s" plainlogin "$(load "$s" login -k "$LOGIN_K" -c "$LOGIN_C" --users "$USERS" \
                --mech PLAIN)"
        done
    fi
    stop_server
    if want plainflood; then
        # A fresh process: memory is the measure, and no server gives all of it back.
        log "$s: fresh start; PLAIN flood K=$FLOOD_K at $FLOOD_C"
        start_server "$s"
        sleep 3
        record "$s" plainflood "$(load "$s" plainflood -k "$FLOOD_K" -c "$FLOOD_C" \
            --users "$USERS" --after "$FLOOD_AFTER")"
        stop_server
    fi
    if [ "$IDLE10K" = 1 ]; then
        log "$s: fresh start; idle K=10000"
        start_server "$s"
        sleep 3
        u=$((USERS < 10000 ? USERS : 10000))
        record "$s" idle10k "$(load "$s" idle -k 10000 -c 100 --hold 2 --users "$u" --timeout 120)"
        stop_server
    fi
done

strip -o "$WORK/hearth.stripped" "$HEARTH"
BIN_BYTES=$(stat -c %s "$WORK/hearth.stripped")
record hearth binary "{\"stripped_bytes\":$BIN_BYTES}"
for s in "${SERVER_LIST[@]}"; do
    [ -s "$WORK/$s/scram-probe.txt" ] && log "$s SCRAM server-first: $(cat "$WORK/$s/scram-probe.txt")"
done
log "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$JSON_OUT" ] && cp "$RESULTS" "$JSON_OUT"

# ---------------------------------------------------------------- the table
python3 - "$RESULTS" "$CHAT_RUNS" "$LOGIN_RUNS" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, login_runs = sys.argv[2], sys.argv[3]
servers = [s for s in ("hearth", "prosody", "ejabberd") if any(r["server"] == s for r in rows)]
peers = [s for s in servers if s != "hearth"]

def get(server, kind, key, f=lambda x: x):
    vals = [r.get(key) for r in rows if r["server"] == server and r["kind"] == kind]
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return f(statistics.median(vals))

def per_cpu(server):
    # messages per server CPU second (throughput at equal CPU), median over runs
    vals = [10000 / r["server_cpu_s_per_10k_msgs"] for r in rows
            if r["server"] == server and r["kind"] == "chat" and r.get("server_cpu_s_per_10k_msgs")]
    return statistics.median(vals) if vals else None

def text(server, kind, key):
    vals = [r.get(key) for r in rows if r["server"] == server and r["kind"] == kind]
    return vals[-1] if vals else None

kib = lambda v: v / 1024
lines = [  # label, value(server), higher is better?, target for hearth/better peer
    ("start-up to listening (ms)", lambda s: get(s, "start", "startup_ms"), False, "report"),
    ("RSS after start (MiB)", lambda s: get(s, "start", "rss_after_start_kib", kib), False, "<= 0.33"),
    ("idle 1k: RSS with sessions (MiB)", lambda s: get(s, "idle", "server_rss_k_kib", kib), False, ""),
    ("idle 1k: memory/session (KiB)", lambda s: get(s, "idle", "server_bytes_per_session", kib), False, "<= 0.33, <= 8 KiB"),
    ("idle 10k: RSS with sessions (MiB)", lambda s: get(s, "idle10k", "server_rss_k_kib", kib), False, ""),
    ("idle 10k: memory/session (KiB)", lambda s: get(s, "idle10k", "server_bytes_per_session", kib), False, "<= 0.33, <= 8 KiB"),
    ("idle 10k: login wall time (s)", lambda s: get(s, "idle10k", "login_wall_s"), False, ""),
    (f"login: sessions/s (median of {login_runs})", lambda s: get(s, "login", "sessions_per_s"), True, ">= 2"),
    ("login: server CPU s / 1000", lambda s: get(s, "login", "server_cpu_s_per_1k_logins"), False, ""),
    ("login: generator CPU (cores)", lambda s: get(s, "login", "gen_cpu_share"), None, ""),
    (f"PLAIN login: sessions/s (median of {login_runs})", lambda s: get(s, "plainlogin", "sessions_per_s"), True, ""),
    ("PLAIN login: server CPU s / 1000", lambda s: get(s, "plainlogin", "server_cpu_s_per_1k_logins"), False, ""),
    ("PLAIN flood: RSS idle (MiB)", lambda s: get(s, "plainflood", "server_rss_idle_kib", kib), False, ""),
    ("PLAIN flood: RSS peak (MiB)", lambda s: get(s, "plainflood", "server_rss_peak_kib", kib), False, ""),
    ("PLAIN flood: peak - idle (MiB)", lambda s: get(s, "plainflood", "server_rss_peak_over_idle_kib", kib), False, "<= 38"),
    ("PLAIN flood: RSS at the end (MiB)", lambda s: get(s, "plainflood", "server_rss_end_kib", kib), False, ""),
    ("PLAIN flood: RSS some s later (MiB)", lambda s: get(s, "plainflood", "server_rss_after_kib", kib), False, ""),
    ("PLAIN flood: threads peak", lambda s: get(s, "plainflood", "server_threads_peak"), False, ""),
    ("PLAIN flood: server CPU s / 1000", lambda s: get(s, "plainflood", "server_cpu_s_per_1k_attempts"), False, ""),
    ("PLAIN flood: temporary failures", lambda s: get(s, "plainflood", "temporary_auth_failure"), None, ""),
    ("PLAIN flood: wall time (s)", lambda s: get(s, "plainflood", "wall_s"), None, ""),
    (f"chat: messages/s (median of {runs})", lambda s: get(s, "chat", "messages_per_s"), True, ""),
    ("chat: msgs per server CPU-s", per_cpu, True, ">= 3"),
    ("chat: server CPU s / 10k msgs", lambda s: get(s, "chat", "server_cpu_s_per_10k_msgs"), False, "<= 0.33"),
    ("chat: latency p50 (ms)", lambda s: get(s, "chat", "latency_p50_ms"), False, ""),
    ("chat: latency p99 (ms)", lambda s: get(s, "chat", "latency_p99_ms"), False, "< 1"),
    ("chat: latency max (ms)", lambda s: get(s, "chat", "latency_max_ms"), False, ""),
    ("chat: generator CPU (cores)", lambda s: get(s, "chat", "gen_cpu_share"), None, ""),
    ("presence: roster set-up, untimed (s)", lambda s: get(s, "presence", "setup_s"), None, ""),
    ("presence: logins+logouts/s", lambda s: get(s, "presence", "cycles_per_s"), True, ""),
    ("presence: fan-out to contacts/s", lambda s: get(s, "presence", "fanout_per_s"), True, ""),
    ("presence: probe answers/s", lambda s: get(s, "presence", "probe_answers_per_s"), True, ""),
    ("presence: server CPU s / 10k stanzas", lambda s: get(s, "presence", "server_cpu_s_per_10k_presence"), False, ""),
    ("presence: latency p50 (ms)", lambda s: get(s, "presence", "latency_p50_ms"), False, ""),
    ("presence: latency p99 (ms)", lambda s: get(s, "presence", "latency_p99_ms"), False, ""),
    ("presence: generator CPU (cores)", lambda s: get(s, "presence", "gen_cpu_share"), None, ""),
    ("offline: stored/s", lambda s: get(s, "offline", "stored_per_s"), True, ""),
    ("offline: store server CPU s / 10k", lambda s: get(s, "offline", "store_server_cpu_s_per_10k"), False, ""),
    ("offline: disk bytes / stored msg", lambda s: get(s, "offline", "write_bytes_per_stored_msg"), False, "report"),
    ("offline: delivered/s at login", lambda s: get(s, "offline", "delivered_per_s"), True, ""),
    ("offline: deliver server CPU s / 10k", lambda s: get(s, "offline", "deliver_server_cpu_s_per_10k"), False, ""),
    ("offline: exactly once", lambda s: text(s, "offline", "exactly_once"), None, "yes"),
    ("binary, stripped (MiB)", lambda s: get(s, "binary", "stripped_bytes", lambda b: b / 2**20), None, "report"),
]

def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"

head = ["figure"] + servers + (["hearth/better peer", "target"] if "hearth" in servers and peers else [])
table = []
for label, fn, higher, target in lines:
    vals = {s: fn(s) for s in servers}
    if all(v is None for v in vals.values()):
        continue
    row = [label] + [fmt(vals[s]) for s in servers]
    if len(head) > len(servers) + 1:
        pv = [vals[p] for p in peers if vals[p] is not None]
        ratio = "-"
        if higher is not None and pv and vals["hearth"] is not None:
            best = max(pv) if higher else min(pv)
            if best:
                ratio = f"{vals['hearth'] / best:.2f}"
        row += [ratio, target]
    table.append(row)

widths = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]
def show(r):
    return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
print(show(head))
print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
for r in table:
    print(show(r))
bad = lambda r: (r.get("failed") or r.get("session_failures") or r.get("errors") or r.get("wrong_answers")
                 or r.get("observer_failures") or r.get("bounced") or r.get("purge_stale"))
fails = [(r["server"], r["kind"], bad(r), r.get("first_failure")) for r in rows if bad(r)]
if fails:
    print("\nfailures:", fails)
PY
