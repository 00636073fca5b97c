#!/usr/bin/env python3
"""Device accounts with aioxmpp 0.13, for tests/device.rs: hearth's telemetry element as
an aioxmpp XSO on Presence, read with aioxmpp's own XEP-0203 Delay XSO (aioxmpp.misc)
and its SimplePresenceDispatcher.

--role device: send presence with --status and each --value NAME=VALUE[:UNIT], wait for
  the server's echo, and leave                                       -> "reported"
--role watch: send initial presence and wait for presence from --device (bare) whose
  status is --expect-status; its type, status, telemetry values and delay stamp -> "seen"

Every stdout line is one JSON object with an "event" key; exit 0 on success, 1 on a
failed step, 2 no session. The certificate is not verified (a test server on loopback).
"""

import argparse
import asyncio
import json
import sys

try:
    import aioxmpp
    import aioxmpp.dispatcher
    import aioxmpp.misc
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
# aioxmpp registers XEP-0203's Delay on messages only; a presence can carry it too.
aioxmpp.Presence.xep0203_delay = xso.ChildList([aioxmpp.misc.Delay])


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def status_of(p):
    return p.status.any() if p.status else ""


async def device(client, args):
    t = Telemetry()
    for v in args.value:
        name, _, rest = v.partition("=")
        text, _, unit = rest.partition(":")
        val = Value()
        val.name = name
        val.unit = unit or None
        val.text = text
        t.values.append(val)
    p = aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE)
    p.status[None] = args.status
    p.hearth_telemetry = t
    echo = asyncio.get_event_loop().create_future()
    dispatcher = client.summon(aioxmpp.dispatcher.SimplePresenceDispatcher)
    me = client.local_jid

    def on_echo(stanza):
        if stanza.from_ == me and not echo.done():
            echo.set_result(stanza)
    dispatcher.register_callback(aioxmpp.PresenceType.AVAILABLE, None, on_echo)
    await client.send(p)
    await echo
    emit("reported", status=args.status)


async def watch(client, args):
    want = aioxmpp.JID.fromstr(args.device).bare()
    seen = asyncio.get_event_loop().create_future()
    dispatcher = client.summon(aioxmpp.dispatcher.SimplePresenceDispatcher)

    def on_presence(stanza):
        if stanza.from_ is not None and stanza.from_.bare() == want \
                and status_of(stanza) == args.expect_status and not seen.done():
            seen.set_result(stanza)
    for ty in (aioxmpp.PresenceType.AVAILABLE, aioxmpp.PresenceType.UNAVAILABLE):
        dispatcher.register_callback(ty, None, on_presence)
    await client.send(aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE))
    got = await seen
    tel = got.hearth_telemetry
    delay = got.xep0203_delay[0] if got.xep0203_delay else None
    emit("seen",
         type="available" if got.type_ == aioxmpp.PresenceType.AVAILABLE else "unavailable",
         status=status_of(got),
         telemetry=None if tel is None else
         [{"name": v.name, "unit": v.unit, "value": v.text} for v in tel.values],
         delay=delay.stamp.isoformat() if delay else None,
         delay_from=str(delay.from_) if delay and delay.from_ else None)


async def run(args):
    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    try:
        ctx = client.connected(presence=aioxmpp.PresenceState(False))
        await asyncio.wait_for(ctx.__aenter__(), args.timeout)
    except Exception as e:  # noqa: BLE001
        emit("error", reason=f"no session: {type(e).__name__}: {e}")
        return 2
    try:
        step = device if args.role == "device" else watch
        await asyncio.wait_for(step(client, args), args.timeout)
    except Exception as e:  # noqa: BLE001 - any failure is the test's answer
        emit("error", reason=f"{type(e).__name__}: {e}")
        return 1
    finally:
        try:
            await asyncio.wait_for(ctx.__aexit__(None, None, None), 5)
        except Exception:  # noqa: BLE001
            pass
    emit("done")
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--role", choices=["device", "watch"], required=True)
    p.add_argument("--status", default="")
    p.add_argument("--value", action="append", default=[])
    p.add_argument("--device", default=None)
    p.add_argument("--expect-status", default=None)
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
