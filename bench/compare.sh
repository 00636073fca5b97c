#!/usr/bin/env bash
# bench/compare.sh: hearth beside Prosody and ejabberd, same machine, same load, same run.
#
# Installs Debian's prosody and ejabberd if missing (their packaged services are stopped),
# builds hearth and hearth-load in release mode, starts each server on loopback with the
# configuration in bench/peers/, creates the same accounts on all three, runs the same
# hearth-load scenarios against each and prints one table with the ratio hearth/better peer.
# With --scenarios s2s it also runs them two at a time, federating with each other.
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
#   --csi-secs D     csi: measured seconds per variant                 [120]
#   --csi-contacts N csi: the phone's chatty contacts                   [20]
#   --pep-contacts N pep: the publisher's contacts, each notified        [20]
#   --pep-items K    pep: items published                                [1000]
#   --pep-window W   pep: publishes unanswered at a time (1: each sent when the
#                    previous one's result arrives)                      [1]
#   --muc-occupants N muc: occupants of the room                     [50]
#   --muc-messages M  muc: groupchat messages sent                    [2000]
#   --muc-senders S   muc: occupants sending, each with --muc-window
#                     messages not yet echoed by the room at a time    [5]
#   --muc-window W    muc: see --muc-senders                           [1]
#   --upload-bytes B  upload: size of the file uploaded                 [100000000]
#   --upload-runs R   upload: uploads per server, the median is reported [3]
#   --scenarios LIST comma-separated subset of idle,login,chat,presence,offline,
#                    plainlogin,plainflood,csi,pep,muc,upload,mam,mampeers,resume,smidle,s2s
#                    [idle,login,chat,presence,offline]
#                    pep (XEP-0163): a publisher and --pep-contacts contacts whose caps
#                    ask for urn:xmpp:avatar:metadata notifications; --pep-items
#                    publishes, --pep-window at a time: publish round trip, fan-out latency,
#                    notifications/s, CPU per 10k, exactly once, last item on login
#                    muc (XEP-0045): --muc-occupants occupants join a new room at
#                    conference.<domain>, --muc-senders of them send --muc-messages
#                    groupchat messages: deliveries/s, latency, CPU per 10k deliveries,
#                    RSS, exactly once
#                    upload (XEP-0363): a slot for --upload-bytes, PUT over HTTPS on
#                    the port P+5 of each server (Prosody's mod_http_file_share,
#                    ejabberd's mod_http_upload), then GET and compare: MB/s each way,
#                    server RSS before and at its highest during the PUT
#                    csi: an inactive phone (XEP-0352) and --csi-contacts contacts
#                    changing presence and typing for --csi-secs, the phone with CSI
#                    on, then off; bytes and reads it received (see bench/README.md)
#                    mam (hearth only): on a stopped hearth, --mam-messages archived
#                    messages of load0 are inserted with SQL (bench/mam-fill.sql); then,
#                    on a fresh process, XEP-0313 pages of 50 from the newest and from
#                    the middle; disk bytes per archived message
#                    mampeers (XEP-0313, all three): on a fresh process, account mam0's
#                    archive is filled over XMPP with --mampeers-messages messages from
#                    mam1..mam4 (fill rate), then --mampeers-queries pages of 50 from the
#                    newest and after the middle (found by paging, untimed)
#                    resume (XEP-0198): --sm-k sessions log in with stream management
#                    and resumption, send presence and drop their TCP connection, then
#                    reconnect and resume, --sm-c at a time (--sm-runs runs): resume
#                    time beside login time, server CPU per 1000 of each;
#                    smidle (XEP-0198): three fresh processes per server, each holding
#                    --idle-k idle sessions: without stream management, with it enabled
#                    (resumable), and hibernating (connection dropped once enabled)
#                    plainlogin: the login scenario with SASL PLAIN (LOGIN_RUNS runs);
#                    plainflood: on a fresh process, --flood-k PLAIN attempts at
#                    --flood-c at once, half right, half wrong for unknown accounts,
#                    server RSS sampled during and --flood-after seconds after;
#                    s2s (federation, ~5.5 min for all three): each server with its own
#                    domain (hearth.test, prosody.test, ejabberd.test), found through
#                    a dnsmasq of the run's own; for each pair of servers (fresh
#                    processes) --s2s-pairs senders on one send chat messages to as
#                    many receivers on the other, --s2s-runs runs each way; then, on a
#                    fresh process of each, RSS per idle s2s link with --s2s-links
#                    domains of one more Prosody (see bench/README.md)
#   --mam-messages N mam: messages in the archive                     [1000000]
#   --mampeers-messages N  mampeers: messages sent to fill the archive [10000]
#   --mampeers-queries Q   mampeers: queries of each kind              [200]
#   --peer-mam on|off  XEP-0313 archiving in Prosody's and ejabberd's configurations
#                    (mod_mam, every message archived, like hearth's default); off drops
#                    the lines marked [mam], as before the mampeers scenario     [on]
#   --s2s-runs R     s2s: runs per direction, the median is reported  [3]
#   --s2s-secs D     s2s: measured seconds per run                    [10]
#   --s2s-pairs P    s2s: sender/receiver pairs                       [8]
#   --s2s-window W   s2s: messages in flight per pair                 [16]
#   --s2s-links N    s2s: remote domains for the idle-link RSS        [50]
#   --sm-k K         resume: sessions dropped and resumed per run      [1000]
#   --sm-runs R      resume: runs per server, the median is reported  [3]
#   --sm-c C         resume: sessions logging in / resuming at once     [50]
#   --flood-k K      PLAIN attempts in plainflood                     [1000]
#   --flood-c C      plainflood concurrency                           [200]
#   --flood-after S  seconds RSS is watched after the flood           [15]
#   --cert TYPE      ecdsa (P-256; hearth makes its own) or rsa (one RSA-2048 certificate
#                    for all three servers, hearth included); s2s: one self-signed
#                    certificate of this type per domain, hearth's too [ecdsa]
#   --port-base P    hearth listens on P, Prosody on P+10, ejabberd on P+20 [25222];
#                    s2s: their s2s ports P+47, P+57, P+67, the many-domain Prosody
#                    P+30 (c2s) and P+77 (s2s)
#   --dns-addr A     s2s: where the run's dnsmasq answers (port 53)    [127.78.0.53]
#   --servers LIST   comma-separated subset of hearth,prosody,ejabberd [all three]
#   --no-build       use the existing target/release binaries
#   --keep           keep the work directory (configs, logs, raw JSON) and print its path
#   --json FILE      also copy every raw result (one JSON object per line) to FILE
#
# Needs root (apt-get, running the peers as their own system users with setpriv, and for
# s2s dnsmasq on port 53 and mount namespaces). Everything runs on 127.0.0.1 (s2s's
# dnsmasq on --dns-addr); every loop is bounded; every process started here is stopped on
# exit.

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
CSI_SECS=120
CSI_CONTACTS=20
PEP_CONTACTS=20
PEP_ITEMS=1000
PEP_WINDOW=1
MUC_OCCUPANTS=50
MUC_MESSAGES=2000
MUC_SENDERS=5
MUC_WINDOW=1
UPLOAD_BYTES=100000000
UPLOAD_RUNS=3
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
SM_K=1000
SM_RUNS=3
SM_C=50
FLOOD_K=1000
FLOOD_C=200
MAM_MESSAGES=1000000
MAMP_MESSAGES=10000
MAMP_QUERIES=200
MAMP_SENDERS=4
PEER_MAM=on
FLOOD_AFTER=15
CERT=ecdsa
S2S_RUNS=3
S2S_SECS=10
S2S_PAIRS=8
S2S_WINDOW=16
S2S_LINKS=50
DNS_ADDR=127.78.0.53
HEARTH_LOG=warn # RUST_LOG of hearth

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
        --csi-secs) CSI_SECS=$2; shift 2 ;;
        --csi-contacts) CSI_CONTACTS=$2; shift 2 ;;
        --pep-contacts) PEP_CONTACTS=$2; shift 2 ;;
        --pep-items) PEP_ITEMS=$2; shift 2 ;;
        --pep-window) PEP_WINDOW=$2; shift 2 ;;
        --muc-occupants) MUC_OCCUPANTS=$2; shift 2 ;;
        --muc-messages) MUC_MESSAGES=$2; shift 2 ;;
        --muc-senders) MUC_SENDERS=$2; shift 2 ;;
        --muc-window) MUC_WINDOW=$2; shift 2 ;;
        --upload-bytes) UPLOAD_BYTES=$2; shift 2 ;;
        --upload-runs) UPLOAD_RUNS=$2; shift 2 ;;
        --offline-messages) OFF_MESSAGES=$2; shift 2 ;;
        --offline-recipients) OFF_RECIPIENTS=$2; shift 2 ;;
        --offline-senders) OFF_SENDERS=$2; shift 2 ;;
        --offline-window) OFF_WINDOW=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --mam-messages) MAM_MESSAGES=$2; shift 2 ;;
        --mampeers-messages) MAMP_MESSAGES=$2; shift 2 ;;
        --mampeers-queries) MAMP_QUERIES=$2; shift 2 ;;
        --peer-mam) PEER_MAM=$2; shift 2 ;;
        --flood-k) FLOOD_K=$2; shift 2 ;;
        --sm-k) SM_K=$2; shift 2 ;;
        --sm-runs) SM_RUNS=$2; shift 2 ;;
        --sm-c) SM_C=$2; shift 2 ;;
        --flood-c) FLOOD_C=$2; shift 2 ;;
        --flood-after) FLOOD_AFTER=$2; shift 2 ;;
        --cert) CERT=$2; shift 2 ;;
        --s2s-runs) S2S_RUNS=$2; shift 2 ;;
        --s2s-secs) S2S_SECS=$2; shift 2 ;;
        --s2s-pairs) S2S_PAIRS=$2; shift 2 ;;
        --s2s-window) S2S_WINDOW=$2; shift 2 ;;
        --s2s-links) S2S_LINKS=$2; shift 2 ;;
        --dns-addr) DNS_ADDR=$2; shift 2 ;;
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
    CSI_SECS CSI_CONTACTS PEP_CONTACTS PEP_ITEMS PEP_WINDOW MUC_OCCUPANTS MUC_MESSAGES MUC_SENDERS MUC_WINDOW UPLOAD_BYTES UPLOAD_RUNS MAMP_MESSAGES MAMP_QUERIES FLOOD_K FLOOD_C FLOOD_AFTER SM_K SM_RUNS SM_C S2S_RUNS S2S_SECS S2S_PAIRS S2S_WINDOW S2S_LINKS; do
    [[ ${!n} =~ ^[0-9]+$ ]] && [ "${!n}" -gt 0 ] || die "$n must be a positive integer"
done
[ $((2 * PAIRS)) -le "$USERS" ] || die "--pairs needs 2*P accounts (--users)"
[ "$SM_K" -le "$USERS" ] || die "--sm-k needs as many accounts (--users): one session each"
[ $(((OFF_MESSAGES + OFF_RECIPIENTS - 1) / OFF_RECIPIENTS)) -le 500 ] ||
    die "--offline-messages / --offline-recipients must stay <= 500 (stored-message quotas)"
declare -A PORT=([hearth]=$PORT_BASE [prosody]=$((PORT_BASE + 10)) [ejabberd]=$((PORT_BASE + 20)))
IFS=, read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
    [[ $s =~ ^(idle|login|chat|presence|offline|plainlogin|plainflood|csi|pep|muc|upload|mam|mampeers|resume|smidle|s2s)$ ]] || die "unknown scenario $s"
done
[[ $DNS_ADDR =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--dns-addr must be a loopback address (127.x.y.z)"
[[ $CERT =~ ^(ecdsa|rsa)$ ]] || die "--cert is ecdsa or rsa"
[[ $PEER_MAM =~ ^(on|off)$ ]] || die "--peer-mam is on or off"
want() { [[ ,$SCENARIOS, == *,$1,* ]]; }
if want mampeers && [ "$PEER_MAM" = off ] && [[ $SERVERS != hearth ]]; then
    die "mampeers needs the peers' archives (--peer-mam on)"
fi
# Whether any scenario runs on one server at a time (all but s2s): they share the
# accounts and the per-server loop below.
C2S=0
for s in "${SCENARIO_LIST[@]}"; do [ "$s" = s2s ] || C2S=1; done
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
# s2s: the servers running at once (name -> pid) and the run's dnsmasq.
declare -A FED_PID=()
DNS_PID=""

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
    for p in "${FED_PID[@]}"; do stop_pid "$p"; done
    [ -n "$DNS_PID" ] && stop_pid "$DNS_PID"
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
if want s2s; then
    # The many-domain server of the idle-link measure is a Prosody whatever --servers says;
    # dnsmasq answers the servers' DNS questions; lua-unbound is Prosody's resolver.
    [[ " ${need_install[*]} " == *" prosody "* ]] || command -v prosody >/dev/null ||
        need_install+=(prosody)
    [ -x /usr/sbin/dnsmasq ] || need_install+=(dnsmasq-base)
    dpkg -s lua-unbound >/dev/null 2>&1 || need_install+=(lua-unbound)
fi
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

render() { # template -> $WORK/name with @WORK@ and @PORT@ filled in (--peer-mam off: no [mam] lines)
    local drop=()
    [ "$PEER_MAM" = off ] && drop=(-e '/\[mam\]/d')
    sed -e "s#@WORK@#$WORK#g" -e "s#@PORT@#$2#g" -e "s#@HTTPPORT@#$(($2 + 5))#g" "${drop[@]}" \
        "$PEERS/$1" >"$WORK/$1"
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
# spawn_server KIND CONFIG DIR PORT [ns]: starts a KIND server (hearth, prosody, ejabberd)
# with CONFIG in the background as LAUNCHED_PID, its output and data under DIR, waits until
# PORT listens (polling `ss`, so no connection is made) and sets STARTUP_MS. With `ns`, in
# a private mount namespace whose /etc/resolv.conf and /etc/hosts are the s2s run's
# (unshare --mount + mount --bind, as tests/common/peers.rs does), so it finds the other
# servers' domains through the run's dnsmasq.
spawn_server() {
    local kind=$1 config=$2 dir=$3 port=$4 ns=() t0 i
    if [ "${5:-}" = ns ]; then
        # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
        ns=(unshare --mount --propagation private sh -c
            'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
            s2s-dns "$WORK/s2s/dns/resolv.conf" "$WORK/s2s/dns/hosts")
    fi
    t0=$(date +%s%N)
    case $kind in
        hearth)
            # As `nobody`: hearth refuses to serve as root (and the peers run as their users).
            (ulimit -n "$NOFILE"; RUST_LOG=$HEARTH_LOG exec "${ns[@]}" setpriv --reuid nobody \
                --regid "$(id -g nobody)" --clear-groups "$HEARTH" serve --config "$config") \
                >>"$dir/out.log" 2>&1 &
            ;;
        prosody)
            (ulimit -n "$NOFILE"; exec "${ns[@]}" setpriv --reuid prosody --regid prosody \
                --init-groups prosody -F --config "$config") >>"$dir/out.log" 2>&1 &
            ;;
        ejabberd)
            # Started like `ejabberdctl foreground` does, but without su (PAM would reset
            # the open-file limit to 1024) and without Erlang distribution (so no epmd);
            # +sbwt none: schedulers do not busy-wait, which would inflate CPU figures;
            # nodelay on accepted and on outgoing (s2s) sockets, as hearth and Prosody
            # (nagle = false) have: with Nagle, s2s latency shows 40 ms delayed-ACK stalls.
            (
                ulimit -n "$NOFILE"
                cd "$dir"
                export EJABBERD_CONFIG_PATH="$config" \
                    EJABBERD_LOG_PATH="$dir/ejabberd.log" \
                    ERL_LIBS=/usr/lib/x86_64-linux-gnu ERL_MAX_PORTS=32000 \
                    ERL_CRASH_DUMP="$dir/erl_crash.dump" HOME="$dir"
                exec "${ns[@]}" setpriv --reuid ejabberd --regid ejabberd --init-groups /usr/bin/erl \
                    +K true +P 250000 +sbwt none +sbwtdcpu none +sbwtdio none -noinput \
                    -kernel inet_default_listen_options '[{nodelay,true}]' \
                    -kernel inet_default_connect_options '[{nodelay,true}]' \
                    -mnesia dir "\"$dir/spool\"" -s ejabberd
            ) >>"$dir/out.log" 2>&1 &
            ;;
    esac
    LAUNCHED_PID=$!
    wait_port "$port" "$LAUNCHED_PID" "$kind" "$dir"
    STARTUP_MS=$((($(date +%s%N) - t0) / 1000000))
}

# wait_port PORT PID NAME DIR: polls `ss` until PORT listens; dies if PID exits first or
# after 30 s.
wait_port() {
    local port=$1 pid=$2 name=$3 dir=$4 i
    for i in $(seq 1 3000); do # 3000 x ~10 ms
        ss -Hltn "sport = :$port" | grep -q . && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $dir/"
        sleep 0.005
    done
    die "$name did not listen on $port within 30 s; see $dir/"
}

# start_server NAME: a fresh NAME with the configuration of the one-server scenarios, as
# SERVER_PID.
start_server() {
    local name=$1 config
    case $name in
        hearth) config="$WORK/hearth.toml" ;;
        prosody) config="$WORK/prosody.cfg.lua" ;;
        ejabberd) config="$WORK/ejabberd.yml" ;;
    esac
    spawn_server "$name" "$config" "$WORK/$name" "${PORT[$name]}"
    SERVER_PID=$LAUNCHED_PID
    SERVER_NAME=$name
}

stop_server() {
    [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
    SERVER_PID=""
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# settle_rss PID: waits until PID's RSS stays within 0.2% over three readings a second
# apart (at most 30 s): ejabberd's shrinks by ~20 MiB over the ~12 s after it listens.
settle_rss() {
    local pid=$1 a b c i
    a=$(rss_kib "$pid")
    sleep 1
    b=$(rss_kib "$pid")
    for i in $(seq 1 30); do
        sleep 1
        c=$(rss_kib "$pid")
        local lo=$a hi=$a v
        for v in "$b" "$c"; do
            [ "$v" -lt "$lo" ] && lo=$v
            [ "$v" -gt "$hi" ] && hi=$v
        done
        [ $(((hi - lo) * 500)) -le "$lo" ] && return 0
        a=$b b=$c
    done
}

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
want csi && ACCOUNT_SETS+=("csi{}:$((CSI_CONTACTS + 1))")
want pep && ACCOUNT_SETS+=("pep{}:$((PEP_CONTACTS + 1))")
want muc && ACCOUNT_SETS+=("muc{}:$MUC_OCCUPANTS")
# mampeers: an archive of its own (load0's gets chat and the SQL fill of `mam`).
want mampeers && ACCOUNT_SETS+=("mam{}:$((MAMP_SENDERS + 1))")
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
if [ "$C2S" = 1 ] && [[ ,$SERVERS, == *,hearth,* ]]; then
    log "hearth: creating $TOTAL_USERS accounts (background)"
    create_accounts hearth &
    HEARTH_USERS_PID=$!
    BG_PIDS+=("$HEARTH_USERS_PID")
fi
for s in "${SERVER_LIST[@]}"; do
    [ "$s" = hearth ] || [ "$C2S" = 0 ] && continue
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
    [ "$C2S" = 1 ] || break
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
    if want csi; then
        # The phone's roster set-up (not timed) runs in the first call.
        for v in on off; do
            record "$s" "csi-$v" "$(load "$s" csi -d "$CSI_SECS" --csi "$v" \
                --contacts "$CSI_CONTACTS" -c "$LOGIN_C" --user-pattern 'csi{}' \
                --timeout 60)"
        done
    fi
    if want pep; then
        # The roster set-up (not timed) and a warm-up until every contact is notified
        # (the server has asked about and kept the contacts' caps) run first.
        record "$s" pep "$(load "$s" pep --contacts "$PEP_CONTACTS" --items "$PEP_ITEMS" \
            -w "$PEP_WINDOW" -c "$LOGIN_C" --user-pattern 'pep{}' --timeout 60)"
    fi
    if want muc; then
        # Every occupant joins a new room of the run's own (not timed), a warm-up message
        # goes round, then the timed messages.
        record "$s" muc "$(load "$s" muc --occupants "$MUC_OCCUPANTS" -m "$MUC_MESSAGES" \
            --senders "$MUC_SENDERS" -w "$MUC_WINDOW" -c "$LOGIN_C" --user-pattern 'muc{}' \
            --timeout 60)"
    fi
    if want upload; then
        record "$s" upload "$(load "$s" upload --bytes "$UPLOAD_BYTES" --runs "$UPLOAD_RUNS" \
            --timeout 60)"
    fi
    if want resume; then
        for r in $(seq 1 "$SM_RUNS"); do
            record "$s" resume "$(load "$s" resume -k "$SM_K" -c "$SM_C" --users "$USERS")"
        done
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
    if want mam && [ "$s" != hearth ]; then
        # Prosody's mod_mam and ejabberd's mod_mam keep their archives in their own
        # schemas (and ejabberd in Mnesia by default); no bulk fill for them yet.
        log "$s: mam not measured (no bulk archive fill for $s)"
    elif want mam; then
        db="$WORK/hearth/data/hearth.db"
        sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
        before=$(stat -c %s "$db")
        log "hearth: filling the archive with $MAM_MESSAGES messages (SQL)"
        t0=$(date +%s%N)
        sqlite3 "$db" -cmd ".parameter set :n $MAM_MESSAGES" <"$ROOT/bench/mam-fill.sql" >/dev/null ||
            die "filling the archive failed"
        fill_ms=$((($(date +%s%N) - t0) / 1000000))
        after=$(stat -c %s "$db")
        middle=$(sqlite3 "$db" "SELECT id FROM archive WHERE localpart = 'load0' ORDER BY id
            LIMIT 1 OFFSET $((MAM_MESSAGES / 2))")
        chown -R nobody "$WORK/hearth/data"
        log "hearth: fresh start; mam on $MAM_MESSAGES messages"
        start_server hearth
        sleep 3
        rss_start=$(rss_kib "$SERVER_PID")
        out=$(load hearth mam -q 200 --max 50 --after-id "$middle")
        record hearth mam "$(jq -c --argjson n "$MAM_MESSAGES" --argjson b "$before" \
            --argjson a "$after" --argjson f "$fill_ms" --argjson r "$rss_start" \
            '. + {archived: $n, fill_ms: $f, rss_after_start_kib: $r,
                  disk_bytes_per_archived_msg: (($a - $b) / $n)}' <<<"$out")"
        stop_server
    fi
    if want mampeers; then
        # The same XEP-0313 measure on all three: the archive filled over XMPP (each
        # server archives as it delivers), then the queries, on one fresh process.
        log "$s: fresh start; mampeers: $MAMP_MESSAGES messages over XMPP, then queries"
        start_server "$s"
        sleep 3
        rss_start=$(rss_kib "$SERVER_PID")
        record "$s" mampeers-fill "$(load "$s" mamfill -m "$MAMP_MESSAGES" \
            --senders "$MAMP_SENDERS" -w 32 --user-pattern 'mam{}' --timeout 60)"
        out=$(load "$s" mam -q "$MAMP_QUERIES" --max 50 --middle-at $((MAMP_MESSAGES / 2)) \
            --user-pattern 'mam{}' --timeout 60)
        record "$s" mampeers "$(jq -c --argjson r "$rss_start" '. + {rss_after_start_kib: $r}' \
            <<<"$out")"
        stop_server
    fi
    if want smidle; then
        # XEP-0198 memory: a fresh process for each, its RSS settled first (ejabberd's
        # shrinks for ~12 s after it listens); 5 s hold, then hibernating sessions are
        # resumed to check the server still had them.
        for mode in off on hibernate; do
            log "$s: fresh start; idle K=$IDLE_K, stream management $mode"
            start_server "$s"
            sleep 1
            settle_rss "$SERVER_PID"
            record "$s" "smidle-$mode" "$(load "$s" idle -k "$IDLE_K" -c "$IDLE_C" --hold 5 \
                --users "$USERS" --sm "$mode")"
            stop_server
        done
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

# ---------------------------------------------------------------- federation (s2s)
# Each server gets a domain of its own under .test (RFC 6761), a self-signed certificate of
# the run's key type for it and an s2s port; one more Prosody ("swarm") hosts v0.test …
# vN.test for the idle-link measure. A dnsmasq of the run's own on DNS_ADDR publishes
# every domain (SRV _xmpp-server._tcp → the domain → 127.0.0.1, RFC 6120 §3.2; NXDOMAIN
# for any other name under .test) and nothing else: hearth asks it directly ([s2s]
# resolvers), Prosody and ejabberd run in a mount namespace whose /etc/resolv.conf names
# it. No certificate is valid for anyone, so every link authenticates by dialback
# (XEP-0220) over STARTTLS: what all three support with self-signed certificates.
declare -A S2S_DOMAIN=([hearth]=hearth.test [prosody]=prosody.test [ejabberd]=ejabberd.test
    [swarm]='v{}.test')
declare -A S2S_PORT=([hearth]=$((PORT_BASE + 47)) [prosody]=$((PORT_BASE + 57))
    [ejabberd]=$((PORT_BASE + 67)) [swarm]=$((PORT_BASE + 77)))
PORT[swarm]=$((PORT_BASE + 30))
S2S="$WORK/s2s"

# s2s_setup NAME: directory, certificate, configuration and accounts of one federating
# server (hearth, prosody, ejabberd or swarm); accounts s2s0..s2s{P-1} (swarm: s2s0 on
# each of its domains).
s2s_setup() {
    local name=$1 kind=$1 dir="$S2S/$1" domain template i
    [ "$name" = swarm ] && kind=prosody
    domain=$(sed 's/{}/0/' <<<"${S2S_DOMAIN[$name]}")
    mkdir -p "$dir/certs" "$dir/data" "$dir/spool"
    openssl req -x509 "${KEYGEN[@]}" -nodes -days 7 \
        -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 ||
        die "openssl could not make the certificate for $domain"
    cat "$dir/cert.pem" "$dir/key.pem" >"$dir/cert+key.pem"
    chmod 644 "$dir"/*.pem
    case $kind in
        hearth) template=hearth-s2s.toml ;;
        prosody) template=prosody-s2s.cfg.lua ;;
        ejabberd) template=ejabberd-s2s.yml ;;
    esac
    sed -e "s#@DIR@#$dir#g" -e "s#@DOMAIN@#$domain#g" -e "s#@PORT@#${PORT[$name]}#g" \
        -e "s#@S2S_PORT@#${S2S_PORT[$name]}#g" -e "s#@DNS@#$DNS_ADDR#g" \
        -e "s#@CERT@#$dir/cert.pem#g" -e "s#@KEY@#$dir/key.pem#g" \
        -e "s#@PEM@#$dir/cert+key.pem#g" "$PEERS/$template" >"$dir/$template"
    if [ "$name" = swarm ]; then
        for i in $(seq 1 "$S2S_LINKS"); do
            printf 'VirtualHost "v%d.test"\n' "$i" >>"$dir/$template"
        done
    fi
    FED_CONFIG[$name]="$dir/$template"
    case $kind in
        hearth)
            "$LOAD" users "$S2S_PAIRS" --user-pattern 's2s{}' |
                xargs -P 4 -I{} "$HEARTH" user add {} --password-file "$WORK/password" \
                    --config "$dir/$template" >"$dir/useradd.log" 2>&1 ||
                die "hearth user add failed; see $dir/useradd.log"
            chown -R nobody "$dir"
            ;;
        prosody | ejabberd)
            chown -R "$kind:$kind" "$dir"
            start_fed "$name"
            local count=$S2S_PAIRS domains=1
            [ "$name" = swarm ] && count=1 domains=$((S2S_LINKS + 1))
            python3 "$PEERS/register.py" register --port "${PORT[$name]}" \
                --domain "${S2S_DOMAIN[$name]}" --domains "$domains" --pattern 's2s{}' \
                --count "$count" --password-file "$WORK/password" --threads 8 ||
                die "registering accounts on $name failed"
            stop_fed "$name"
            ;;
    esac
}

# start_fed NAME: a fresh federating NAME (peers in the run's DNS namespace; hearth asks
# dnsmasq itself), as FED_PID[NAME], once its c2s and s2s ports listen.
start_fed() {
    local name=$1 kind=$1 ns=ns
    [ "$name" = swarm ] && kind=prosody
    [ "$kind" = hearth ] && ns=""
    # info: hearth logs each link's set-up and end (lifecycle only, nothing per stanza).
    HEARTH_LOG=info spawn_server "$kind" "${FED_CONFIG[$name]}" "$S2S/$name" "${PORT[$name]}" $ns
    FED_PID[$name]=$LAUNCHED_PID
    wait_port "${S2S_PORT[$name]}" "$LAUNCHED_PID" "$name" "$S2S/$name"
}

stop_fed() {
    stop_pid "${FED_PID[$1]}"
    unset "FED_PID[$1]"
}

# load_s2s A B ARGS...: runs hearth-load with A as server A and B as server B, returns its
# JSON line.
load_s2s() {
    local a=$1 b=$2
    shift 2
    echo "== $a -> $b: hearth-load $*" >>"$S2S/load.log"
    "$LOAD" "$@" --port "${PORT[$a]}" --domain "${S2S_DOMAIN[$a]}" --server-pid "${FED_PID[$a]}" \
        --port-b "${PORT[$b]}" --domain-b "${S2S_DOMAIN[$b]}" --server-pid-b "${FED_PID[$b]}" \
        --password "$PASSWORD" --user-pattern 's2s{}' --scram-cache "$S2S/scram-cache" \
        >>"$S2S/load.log" 2>&1 || true
    tail -n 1 "$S2S/load.log"
}

# record_s2s A B KIND JSON: keeps a raw result of A (sender, or receiver of the idle
# links) with B.
record_s2s() {
    jq -e . >/dev/null 2>&1 <<<"$4" || die "$1 -> $2 $3: no result (see $S2S/load.log)"
    jq -c --arg s "$1" --arg t "$2" --arg k "$3" '. + {server: $s, to: $t, kind: $k}' \
        <<<"$4" >>"$RESULTS"
}

if want s2s; then
    declare -A FED_CONFIG=()
    mkdir -p "$S2S/dns"
    chmod 755 "$S2S"
    if ss -Hlun "src = $DNS_ADDR and sport = :53" | grep -q .; then
        die "$DNS_ADDR:53 is already in use (--dns-addr)"
    fi
    FED_NAMES=("${SERVER_LIST[@]}" swarm)
    # (The c2s ports of the three were checked at the start.)
    for p in "${PORT[swarm]}" "${S2S_PORT[@]}"; do
        ! ss -Hltn "sport = :$p" | grep -q . || die "port $p (for s2s) is already in use"
    done

    # The resolver every federating server uses, and a hosts file without the test domains
    # (so they really go through DNS).
    printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$DNS_ADDR" >"$S2S/dns/resolv.conf"
    printf '127.0.0.1 localhost %s\n::1 localhost ip6-localhost\n' \
        "$(cat /proc/sys/kernel/hostname)" >"$S2S/dns/hosts"
    dns_records=(--local=/test/)
    for s in "${FED_NAMES[@]}"; do
        n=0
        [ "$s" = swarm ] && n=$S2S_LINKS
        for i in $(seq 0 "$n"); do
            d=$(sed "s/{}/$i/" <<<"${S2S_DOMAIN[$s]}")
            dns_records+=("--host-record=$d,127.0.0.1"
                "--srv-host=_xmpp-server._tcp.$d,$d,${S2S_PORT[$s]}")
        done
    done
    # -k: foreground; no configuration file, no upstream, no /etc/hosts; root stays root.
    /usr/sbin/dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --bogus-priv \
        --log-queries --log-facility=- --user=root --pid-file= --bind-interfaces --port=53 \
        "--listen-address=$DNS_ADDR" "${dns_records[@]}" >"$S2S/dns/dnsmasq.log" 2>&1 &
    DNS_PID=$!
    for i in $(seq 1 500); do
        ss -Hltn "src = $DNS_ADDR and sport = :53" | grep -q . && break
        kill -0 "$DNS_PID" 2>/dev/null || die "dnsmasq exited at start; see $S2S/dns/dnsmasq.log"
        sleep 0.01
    done

    log "s2s: certificates, configurations and accounts for ${FED_NAMES[*]}"
    for s in "${FED_NAMES[@]}"; do s2s_setup "$s"; done

    # Throughput: each pair of servers on fresh processes, both directions, runs interleaved.
    for ((i = 0; i < ${#SERVER_LIST[@]}; i++)); do
        for ((j = i + 1; j < ${#SERVER_LIST[@]}; j++)); do
            a=${SERVER_LIST[$i]} b=${SERVER_LIST[$j]}
            log "s2s: $a and $b, fresh start; $S2S_RUNS runs each way"
            start_fed "$a"
            start_fed "$b"
            sleep 3
            # A short unrecorded run each way first: it sets the links up (DNS, TCP, TLS,
            # dialback), so the measured runs find them ready.
            for d in "$a $b" "$b $a"; do
                # shellcheck disable=SC2086 # two words on purpose
                load_s2s $d s2s-chat -p "$S2S_PAIRS" -w "$S2S_WINDOW" -d 1 --warmup 2 >/dev/null
            done
            for r in $(seq 1 "$S2S_RUNS"); do
                for d in "$a $b" "$b $a"; do
                    # shellcheck disable=SC2086
                    record_s2s $d s2s-chat "$(load_s2s $d s2s-chat -p "$S2S_PAIRS" \
                        -w "$S2S_WINDOW" -d "$S2S_SECS" --warmup 2)"
                done
            done
            stop_fed "$a"
            stop_fed "$b"
        done
    done

    # Memory per idle link: each server fresh, receiving from the swarm's domains.
    log "s2s: idle links, $S2S_LINKS domains (+1 warm-up) of the swarm to each server"
    start_fed swarm
    for s in "${SERVER_LIST[@]}"; do
        start_fed "$s"
        settle_rss "${FED_PID[$s]}"
        record_s2s "$s" swarm s2s-idle "$(load_s2s "$s" swarm s2s-idle --links "$S2S_LINKS" -c 10 \
            --settle 5)"
        stop_fed "$s"
    done
    stop_fed swarm
    stop_pid "$DNS_PID"
    DNS_PID=""
    log "s2s: dnsmasq answered $(grep -c 'query\[SRV\]' "$S2S/dns/dnsmasq.log") SRV queries; hearth logged $(grep -hc ' WARN \| ERROR ' "$S2S/hearth/out.log") warnings and errors"
fi

strip -o "$WORK/hearth.stripped" "$HEARTH"
BIN_BYTES=$(stat -c %s "$WORK/hearth.stripped")
record hearth binary "{\"stripped_bytes\":$BIN_BYTES}"
for s in "${SERVER_LIST[@]}"; do
    [ -s "$WORK/$s/scram-probe.txt" ] && log "$s SCRAM server-first: $(cat "$WORK/$s/scram-probe.txt")"
done
log "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$JSON_OUT" ] && cp "$RESULTS" "$JSON_OUT"

# ---------------------------------------------------------------- the table
python3 - "$RESULTS" "$CHAT_RUNS" "$LOGIN_RUNS" "$S2S_RUNS" "$SM_RUNS" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, login_runs, s2s_runs, sm_runs = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
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

def s2s(sender, receiver, key, f=lambda x: x):
    # s2s-chat: median over the runs from sender to receiver
    vals = [r.get(key) for r in rows if r["kind"] == "s2s-chat" and r["server"] == sender
            and r.get("to") == receiver]
    vals = [v for v in vals if v is not None]
    return f(statistics.median(vals)) if vals else None

def tcp_per_domain(server):
    r = [r for r in rows if r["server"] == server and r["kind"] == "s2s-idle"]
    if not r or r[-1].get("server_tcp_after") is None or not r[-1].get("up"):
        return None
    return (r[-1]["server_tcp_after"] - r[-1]["server_tcp_before"]) / r[-1]["up"]

def total(server, kind, key):
    vals = [r.get(key) for r in rows if r["server"] == server and r["kind"] == kind]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None

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
    ("csi on: phone KiB/hour", lambda s: get(s, "csi-on", "phone_bytes_per_hour", kib), False, ""),
    ("csi off: phone KiB/hour", lambda s: get(s, "csi-off", "phone_bytes_per_hour", kib), False, ""),
    ("csi on: phone reads/hour", lambda s: get(s, "csi-on", "phone_reads_per_hour"), False, ""),
    ("csi off: phone reads/hour", lambda s: get(s, "csi-off", "phone_reads_per_hour"), False, ""),
    ("csi on: reads after 10 s quiet/hour", lambda s: get(s, "csi-on", "phone_wakeups_10s_per_hour"), False, ""),
    ("csi off: reads after 10 s quiet/hour", lambda s: get(s, "csi-off", "phone_wakeups_10s_per_hour"), False, ""),
    ("csi on: radio on, 10 s tail (%)", lambda s: get(s, "csi-on", "phone_radio_on_share", lambda v: v * 100), False, ""),
    ("csi off: radio on, 10 s tail (%)", lambda s: get(s, "csi-off", "phone_radio_on_share", lambda v: v * 100), False, ""),
    ("csi on: held at the end (KiB)", lambda s: get(s, "csi-on", "held_bytes_at_end", kib), None, ""),
    ("muc: deliveries/s", lambda s: get(s, "muc", "deliveries_per_s"), True, ""),
    ("muc: messages/s", lambda s: get(s, "muc", "messages_per_s"), True, ""),
    ("muc: latency p50 (ms)", lambda s: get(s, "muc", "latency_p50_ms"), False, ""),
    ("muc: latency p99 (ms)", lambda s: get(s, "muc", "latency_p99_ms"), False, ""),
    ("muc: server CPU s / 10k deliveries", lambda s: get(s, "muc", "server_cpu_s_per_10k_deliveries"), False, ""),
    ("muc: RSS before (MiB)", lambda s: get(s, "muc", "rss_before_kib", kib), False, ""),
    ("muc: RSS after (MiB)", lambda s: get(s, "muc", "rss_after_kib", kib), False, ""),
    ("muc: exactly once", lambda s: text(s, "muc", "exactly_once"), None, "yes"),
    ("upload: PUT MB/s", lambda s: get(s, "upload", "put_mb_per_s"), True, ""),
    ("upload: GET MB/s", lambda s: get(s, "upload", "get_mb_per_s"), True, ""),
    ("upload: server CPU s per PUT", lambda s: get(s, "upload", "put_server_cpu_s"), False, ""),
    ("upload: RSS before (MiB)", lambda s: get(s, "upload", "rss_before_kib", kib), False, ""),
    ("upload: RSS peak during PUT (MiB)", lambda s: get(s, "upload", "rss_peak_kib", kib), False, ""),
    ("upload: RSS growth during PUT (MiB)", lambda s: get(s, "upload", "rss_growth_max_kib", kib), False, ""),
    ("upload: bytes intact", lambda s: text(s, "upload", "intact"), None, "yes"),
    ("pep: publish round trip p50 (ms)", lambda s: get(s, "pep", "publish_rtt_p50_ms"), False, ""),
    ("pep: publish round trip p99 (ms)", lambda s: get(s, "pep", "publish_rtt_p99_ms"), False, ""),
    ("pep: fan-out latency p50 (ms)", lambda s: get(s, "pep", "fanout_p50_ms"), False, ""),
    ("pep: fan-out latency p99 (ms)", lambda s: get(s, "pep", "fanout_p99_ms"), False, ""),
    ("pep: notifications/s", lambda s: get(s, "pep", "notifications_per_s"), True, ""),
    ("pep: server CPU s / 10k notifications", lambda s: get(s, "pep", "server_cpu_s_per_10k_notifications"), False, ""),
    ("pep: RSS before (MiB)", lambda s: get(s, "pep", "rss_before_kib", kib), False, ""),
    ("pep: RSS after (MiB)", lambda s: get(s, "pep", "rss_after_kib", kib), False, ""),
    ("pep: items missing / duplicated", lambda s: None if text(s, "pep", "missing") is None else f"{text(s, 'pep', 'missing')} / {text(s, 'pep', 'duplicates')}", None, "0 / 0"),
    ("pep: exactly once", lambda s: text(s, "pep", "exactly_once"), None, "yes"),
    ("pep: notifications to a bare JID", lambda s: None if text(s, "pep", "notifications_to_bare_jid") is None else str(text(s, "pep", "notifications_to_bare_jid")), None, "0"),
    ("pep: last item on login p50 (ms)", lambda s: get(s, "pep", "last_item_p50_ms"), False, ""),
    ("offline: stored/s", lambda s: get(s, "offline", "stored_per_s"), True, ""),
    ("offline: store server CPU s / 10k", lambda s: get(s, "offline", "store_server_cpu_s_per_10k"), False, ""),
    ("offline: disk bytes / stored msg", lambda s: get(s, "offline", "write_bytes_per_stored_msg"), False, "report"),
    ("offline: delivered/s at login", lambda s: get(s, "offline", "delivered_per_s"), True, ""),
    ("offline: deliver server CPU s / 10k", lambda s: get(s, "offline", "deliver_server_cpu_s_per_10k"), False, ""),
    ("offline: exactly once", lambda s: text(s, "offline", "exactly_once"), None, "yes"),
    ("mam: archived messages", lambda s: get(s, "mam", "archived"), None, ""),
    ("mam: newest 50, p50 (ms)", lambda s: get(s, "mam", "newest_p50_ms"), False, ""),
    ("mam: newest 50, p99 (ms)", lambda s: get(s, "mam", "newest_p99_ms"), False, ""),
    ("mam: middle 50, p50 (ms)", lambda s: get(s, "mam", "middle_p50_ms"), False, ""),
    ("mam: middle 50, p99 (ms)", lambda s: get(s, "mam", "middle_p99_ms"), False, ""),
    ("mam: server CPU ms / query", lambda s: get(s, "mam", "server_cpu_ms_per_query"), False, ""),
    ("mam: RSS after start (MiB)", lambda s: get(s, "mam", "rss_after_start_kib", kib), False, ""),
    ("mam: RSS peak (MiB)", lambda s: get(s, "mam", "server_rss_peak_kib", kib), False, ""),
    ("mam: disk bytes / archived msg", lambda s: get(s, "mam", "disk_bytes_per_archived_msg"), False, "report"),
    # mampeers: the same archive on all three, filled over XMPP (fill: messages/s until
    # the recipient read the last one), then pages of 50 from the newest and after the
    # middle.
    ("mam XMPP: messages sent to fill", lambda s: get(s, "mampeers-fill", "received"), None, ""),
    ("mam XMPP: fill msgs/s", lambda s: get(s, "mampeers-fill", "fill_per_s"), True, ""),
    ("mam XMPP: fill server CPU s / 1000", lambda s: get(s, "mampeers-fill", "server_cpu_s_per_1k_msgs"), False, ""),
    ("mam XMPP: newest 50, p50 (ms)", lambda s: get(s, "mampeers", "newest_p50_ms"), False, ""),
    ("mam XMPP: newest 50, p99 (ms)", lambda s: get(s, "mampeers", "newest_p99_ms"), False, ""),
    ("mam XMPP: middle 50, p50 (ms)", lambda s: get(s, "mampeers", "middle_p50_ms"), False, ""),
    ("mam XMPP: middle 50, p99 (ms)", lambda s: get(s, "mampeers", "middle_p99_ms"), False, ""),
    ("mam XMPP: results per page (newest/middle)", lambda s: None if get(s, "mampeers", "newest_results") is None else f"{get(s, 'mampeers', 'newest_results')}/{get(s, 'mampeers', 'middle_results')}", None, "50/50"),
    ("mam XMPP: server CPU ms / query", lambda s: get(s, "mampeers", "server_cpu_ms_per_query"), False, ""),
    ("mam XMPP: pages to find the middle", lambda s: get(s, "mampeers", "middle_pages"), None, ""),
    ("mam XMPP: RSS after start (MiB)", lambda s: get(s, "mampeers", "rss_after_start_kib", kib), False, ""),
    ("mam XMPP: RSS peak (MiB)", lambda s: get(s, "mampeers", "server_rss_peak_kib", kib), False, ""),
    # XEP-0198. Login: TCP connect to the acknowledgement of initial presence (TLS, SASL,
    # bind, <enable/>, presence, <r/>); resume: TCP connect to <resumed/> (TLS, SASL,
    # <resume/>).
    (f"SM resume: time p50 (ms, median of {sm_runs})", lambda s: get(s, "resume", "resume_p50_ms"), False, ""),
    ("SM resume: time p99 (ms)", lambda s: get(s, "resume", "resume_p99_ms"), False, ""),
    ("SM same run, full login: p50 (ms)", lambda s: get(s, "resume", "login_p50_ms"), False, ""),
    ("SM same run, full login: p99 (ms)", lambda s: get(s, "resume", "login_p99_ms"), False, ""),
    ("SM resume: resumes/s", lambda s: get(s, "resume", "resumes_per_s"), True, ""),
    ("SM resume: server CPU s / 1000", lambda s: get(s, "resume", "resume_server_cpu_s_per_1k"), False, ""),
    ("SM same run, login: server CPU s / 1000", lambda s: get(s, "resume", "login_server_cpu_s_per_1k"), False, ""),
    ("SM resume: <failed/> (sum of runs)", lambda s: total(s, "resume", "resume_refused"), None, "0"),
    ("SM idle, no SM (fresh): KiB/session", lambda s: get(s, "smidle-off", "server_bytes_per_session", kib), False, ""),
    ("SM idle, resumable: KiB/session", lambda s: get(s, "smidle-on", "server_bytes_per_session", kib), False, ""),
    ("SM hibernating: KiB/session", lambda s: get(s, "smidle-hibernate", "server_bytes_per_session", kib), False, ""),
    ("SM hibernating: RSS with them (MiB)", lambda s: get(s, "smidle-hibernate", "server_rss_k_kib", kib), False, ""),
    ("SM hibernating: resumed after hold", lambda s: get(s, "smidle-hibernate", "still_up_after_hold"), None, ""),
    # s2s: the column's server sends to (or receives from) the named one, so each ratio
    # compares hearth with a peer doing the same against the same third server.
    (f"s2s to ejabberd: msgs/s (median of {s2s_runs})", lambda s: s2s(s, "ejabberd", "messages_per_s"), True, ""),
    ("s2s to ejabberd: CPU s/10k, both ends", lambda s: s2s(s, "ejabberd", "server_cpu_s_per_10k_msgs"), False, ""),
    ("s2s to ejabberd: CPU s/10k, sender", lambda s: s2s(s, "ejabberd", "server_cpu_a_s_per_10k_msgs"), False, ""),
    ("s2s to ejabberd: latency p99 (ms)", lambda s: s2s(s, "ejabberd", "latency_p99_ms"), False, ""),
    (f"s2s to Prosody: msgs/s (median of {s2s_runs})", lambda s: s2s(s, "prosody", "messages_per_s"), True, ""),
    ("s2s to Prosody: CPU s/10k, both ends", lambda s: s2s(s, "prosody", "server_cpu_s_per_10k_msgs"), False, ""),
    ("s2s to Prosody: CPU s/10k, sender", lambda s: s2s(s, "prosody", "server_cpu_a_s_per_10k_msgs"), False, ""),
    ("s2s to Prosody: latency p99 (ms)", lambda s: s2s(s, "prosody", "latency_p99_ms"), False, ""),
    (f"s2s from ejabberd: msgs/s (median of {s2s_runs})", lambda s: s2s("ejabberd", s, "messages_per_s"), True, ""),
    ("s2s from ejabberd: CPU s/10k, both ends", lambda s: s2s("ejabberd", s, "server_cpu_s_per_10k_msgs"), False, ""),
    ("s2s from ejabberd: CPU s/10k, receiver", lambda s: s2s("ejabberd", s, "server_cpu_b_s_per_10k_msgs"), False, ""),
    ("s2s from ejabberd: latency p99 (ms)", lambda s: s2s("ejabberd", s, "latency_p99_ms"), False, ""),
    (f"s2s from Prosody: msgs/s (median of {s2s_runs})", lambda s: s2s("prosody", s, "messages_per_s"), True, ""),
    ("s2s from Prosody: CPU s/10k, both ends", lambda s: s2s("prosody", s, "server_cpu_s_per_10k_msgs"), False, ""),
    ("s2s from Prosody: CPU s/10k, receiver", lambda s: s2s("prosody", s, "server_cpu_b_s_per_10k_msgs"), False, ""),
    ("s2s from Prosody: latency p99 (ms)", lambda s: s2s("prosody", s, "latency_p99_ms"), False, ""),
    ("s2s idle: RSS after 1 domain (MiB)", lambda s: get(s, "s2s-idle", "server_rss_before_kib", kib), False, ""),
    ("s2s idle: memory/domain, in+out (KiB)", lambda s: get(s, "s2s-idle", "server_bytes_per_domain", kib), False, ""),
    ("s2s idle: memory/TCP connection (KiB)", lambda s: get(s, "s2s-idle", "server_bytes_per_tcp", kib), False, ""),
    ("s2s idle: TCP connections/domain", tcp_per_domain, None, ""),
    ("s2s idle: link set-up CPU ms/domain", lambda s: get(s, "s2s-idle", "server_cpu_s_per_domain", lambda c: c * 1000), False, ""),
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
                x = vals['hearth'] / best
                ratio = f"{x:.2f}" if x >= 0.01 else f"{x:.4f}"
        row += [ratio, target]
    table.append(row)

widths = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]
def show(r):
    return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
print(show(head))
print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
for r in table:
    print(show(r))

# s2s by direction: every figure of each sender -> receiver, and the ratio to the
# baseline without hearth (Prosody -> ejabberd, same load, same machine).
directions = []
for r in rows:
    if r["kind"] == "s2s-chat" and (r["server"], r["to"]) not in directions:
        directions.append((r["server"], r["to"]))
if directions:
    base = ("prosody", "ejabberd")
    def ratio(d, key):
        v, b = s2s(*d, key), s2s(*base, key)
        return f"{v / b:.2f}" if v is not None and b else "-"
    head = ["s2s sender -> receiver", "msgs/s", "CPU s/10k sender", "receiver", "both",
            "p50 ms", "p99 ms", "gen. cores", "msgs/s vs P->e", "CPU both vs P->e"]
    table = [[f"{a} -> {b}"] + [fmt(s2s(a, b, k)) for k in (
        "messages_per_s", "server_cpu_a_s_per_10k_msgs", "server_cpu_b_s_per_10k_msgs",
        "server_cpu_s_per_10k_msgs", "latency_p50_ms", "latency_p99_ms", "gen_cpu_share")]
        + [ratio((a, b), "messages_per_s"), ratio((a, b), "server_cpu_s_per_10k_msgs")]
        for a, b in directions]
    widths = [max(len(r[i]) for r in [head] + table) for i in range(len(head))]
    print(f"\ns2s by direction (medians of {s2s_runs} runs; CPU: server CPU seconds per 10,000 messages)")
    print(show(head))
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    for r in table:
        print(show(r))

bad = lambda r: (r.get("error") or r.get("failed") or r.get("session_failures") or r.get("errors") or r.get("wrong_answers")
                 or r.get("observer_failures") or r.get("bounced") or r.get("purge_stale")
                 or r.get("receiver_failure"))
fails = [(r["server"], r["kind"], bad(r), r.get("first_failure")) for r in rows if bad(r)]
if fails:
    print("\nfailures:", fails)
PY
