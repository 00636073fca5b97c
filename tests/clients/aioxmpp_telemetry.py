#!/usr/bin/env python3
"""aioxmpp 0.13 (PyPI) watching a hearth sensor's presence (issue 21, MQTT in).

Logs in, sends available presence, and follows --contact (a bare JID) with aioxmpp's
PresenceClient. hearth's telemetry element (urn:hearth:telemetry:0) is declared as an XSO
and registered on aioxmpp's Presence, so the library itself parses it: each presence from
the contact is printed as a "device_presence" line (type, status, values). Done once
available presence with --expect-status came and then, with --expect-unavailable,
unavailable presence.

Every stdout line is one JSON object with an "event" key. Exit status: 0 done, 1 timed
out, 2 no session. The certificate is not verified: the test talks to its own server on
loopback.
"""

import argparse
import asyncio
import json
import sys

try:
    import aioxmpp
    import aioxmpp.xso as xso
except ImportError as e:
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable: {e}"}), flush=True)
    sys.exit(2)

NS = "urn:hearth:telemetry:0"


class Value(xso.XSO):
    TAG = (NS, "value")
    name = xso.Attr("name")
    unit = xso.Attr("unit", default=None)
    text = xso.Text(default="")


class Telemetry(xso.XSO):
    TAG = (NS, "telemetry")
    values = xso.ChildList([Value])


aioxmpp.Presence.hearth_telemetry = xso.Child([Telemetry])


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def run(args):
    jid = aioxmpp.JID.fromstr(args.jid)
    contact = aioxmpp.JID.fromstr(args.contact).bare()
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    done = asyncio.get_event_loop().create_future()
    seen_status = False
    presence = client.summon(aioxmpp.PresenceClient)

    def report(full_jid, stanza, kind):
        nonlocal seen_status
        if full_jid.bare() != contact:
            return
        status = stanza.status.any() if stanza.status else ""
        tel = stanza.hearth_telemetry
        values = [{"name": v.name, "unit": v.unit, "value": v.text}
                  for v in (tel.values if tel is not None else [])]
        emit("device_presence", sender=str(full_jid), type=kind, status=status, values=values)
        if kind == "available" and status == args.expect_status:
            seen_status = True
            emit("device_status", status=status, values=values)
            if not args.expect_unavailable and not done.done():
                done.set_result(0)
        elif kind == "unavailable" and seen_status and not done.done():
            done.set_result(0)

    presence.on_available.connect(lambda j, s: report(j, s, "available"))
    presence.on_changed.connect(lambda j, s: report(j, s, "available"))
    presence.on_unavailable.connect(lambda j, s: report(j, s, "unavailable"))
    try:
        async with client.connected(presence=aioxmpp.PresenceState(True)):
            emit("ready", jid=str(client.local_jid))
            try:
                return await asyncio.wait_for(done, args.timeout)
            except asyncio.TimeoutError:
                emit("timeout", seconds=args.timeout)
                return 1
    except Exception as e:  # noqa: BLE001 - reported
        emit("error", reason=f"{type(e).__name__}: {e}")
        return 2


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--contact", required=True)
    p.add_argument("--expect-status", required=True)
    p.add_argument("--expect-unavailable", action="store_true")
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
