#!/usr/bin/python3
"""Finds an XMPP server on the LAN the way a phone would, with python-zeroconf (an mDNS
and DNS-SD implementation independent of hearth's), then logs in using only what it
found: the address and port from the SRV and A records, the domain from the TXT record.

Every line on stdout is one JSON object with an "event" key:
  {"event": "found", "type", "name", "host", "port", "addresses", "domain"}
  {"event": "login", "type", "ok", "jid" | "output"}     one per service type found
  {"event": "addresses", "type", "addresses"}          the address set changed
  {"event": "removed", "type", "name"}                 a goodbye (TTL 0) arrived
  {"event": "timeout"}                                 --timeout passed
It exits once every service it found has been removed, or at the timeout.

Runs with Debian's python3-zeroconf (0.47) and newer versions from PyPI.
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

TYPES = ["_xmpp-client._tcp.local.", "_xmpps-client._tcp.local."]
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xmpp_client.py")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def login(args, stype, info):
    """Logs in with slixmpp using only what was discovered (and the pinned certificate)."""
    domain = info.properties.get(b"domain", b"").decode()
    address = info.parsed_addresses(IPVersion.V4Only)[0]
    cmd = [sys.executable, CLIENT, "--host", address, "--port", str(info.port),
           "--jid", f"{args.user}@{domain}", "--password-file", args.password_file,
           "--cafile", args.cafile, "--mech", "SCRAM-SHA-256",
           "--tls", "direct" if stype.startswith("_xmpps-") else "starttls", "login"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    jid = None
    for line in out.stdout.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        jid = ev.get("jid", jid)
    if out.returncode == 0:
        emit("login", type=stype, ok=True, jid=jid)
    else:
        emit("login", type=stype, ok=False, output=out.stdout + out.stderr[-2000:])


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()

    changes = queue.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        changes.put((service_type, name, state_change))

    zc = Zeroconf(ip_version=IPVersion.V4Only)
    browsers = [ServiceBrowser(zc, t, handlers=[on_change]) for t in TYPES]
    deadline = time.monotonic() + args.timeout
    found = {}  # (type, name) -> last address list
    pending = set()  # announced, not resolved yet (SRV, TXT or A still on the way)
    removed = set()
    try:
        while time.monotonic() < deadline:
            try:
                stype, name, state = changes.get(timeout=0.5)
            except queue.Empty:
                stype = None
            if stype is not None and state is ServiceStateChange.Removed:
                pending.discard((stype, name))
                if (stype, name) in found:
                    removed.add((stype, name))
                    emit("removed", type=stype, name=name)
                    if removed == set(found):
                        return 0
            elif stype is not None and (stype, name) not in found:
                pending.add((stype, name))
            for stype, name in sorted(pending):
                info = zc.get_service_info(stype, name, timeout=3000)
                if info is None or not info.parsed_addresses(IPVersion.V4Only):
                    continue
                pending.discard((stype, name))
                addresses = sorted(info.parsed_addresses(IPVersion.V4Only))
                found[(stype, name)] = addresses
                emit("found", type=stype, name=name, host=info.server, port=info.port,
                     addresses=addresses,
                     domain=info.properties.get(b"domain", b"").decode())
                login(args, stype, info)
            # Address changes arrive as unsolicited announcements that update the cache.
            for (t, n), old in list(found.items()):
                if (t, n) in removed:
                    continue
                info = zc.get_service_info(t, n, timeout=500)
                if info is None:
                    continue
                now = sorted(info.parsed_addresses(IPVersion.V4Only))
                if now and now != old:
                    found[(t, n)] = now
                    emit("addresses", type=t, addresses=now)
        emit("timeout")
        return 1
    finally:
        for b in browsers:
            b.cancel()
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
