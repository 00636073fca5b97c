#!/bin/bash
# Usage: bench/upload-rss.sh target/release/hearth — starts hearth on a fresh data dir,
# uploads 100 MiB of random bytes with slixmpp's xep_0363 plugin (tests/clients/
# xmpp_client.py) while sampling the server's VmRSS every 50 ms, then downloads the file
# with curl and compares it (BENCHMARKS.md, "Photo sharing"). LOG=debug for timestamps.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$1; D=/tmp/upbench/srv; rm -rf $D; mkdir -p $D
[ -f /tmp/upbench/video.mp4 ] || head -c 104857600 /dev/urandom > /tmp/upbench/video.mp4
cat > $D/h.toml <<T
domain = "test.local"
data_dir = "$D/data"
allow_root = true
mdns = false
federation = false
[c2s]
listen = ["127.0.0.1:45222"]
direct_tls_listen = []
[http]
listen = ["127.0.0.1:45443"]
T
$BIN user add alice --password-file <(echo pw) --config $D/h.toml >/dev/null 2>&1 || true
RUST_LOG=${LOG:-info} $BIN serve --config $D/h.toml > $D/log 2>&1 &
PID=$!
sleep 1.5
echo "idle VmRSS: $(grep VmRSS /proc/$PID/status)"
( while kill -0 $PID 2>/dev/null; do grep VmRSS /proc/$PID/status | awk '{print $2}'; sleep 0.05; done ) > $D/rss &
SAMPLER=$!
T0=$(date +%s.%N)
/usr/bin/python3 $HERE/../tests/clients/xmpp_client.py --host 127.0.0.1 --port 45222 --cafile $D/data/tls/cert.pem --jid alice@test.local --password pw --mech SCRAM-SHA-256 --timeout 300 upload --file /tmp/upbench/video.mp4 > $D/up.json
T1=$(date +%s.%N)
URL=$(grep uploaded $D/up.json | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["url"])')
grep -o '"url": "[^"]*"' $D/up.json | head -1
echo "upload (slixmpp+aiohttp, incl. login and slot): $(echo "$T1 - $T0" | bc) s"
grep "stored" $D/log | tail -1
T2=$(date +%s.%N)
curl -s --cacert $D/data/tls/cert.pem --resolve test.local:45443:127.0.0.1 -o /tmp/upbench/down.bin "$URL"
T3=$(date +%s.%N)
echo "download (curl): $(echo "$T3 - $T2" | bc) s"
cmp /tmp/upbench/video.mp4 /tmp/upbench/down.bin && echo "same bytes"
kill $SAMPLER; kill $PID; wait $PID 2>/dev/null || true
sort -n $D/rss | tail -1 | sed 's/^/peak VmRSS kB: /'
head -1 $D/rss | sed 's/^/first sample kB: /'
